import Synchronization
import TroupeCore

/// Collects what callbacks report, from any task, for the assertions.
final class Recorder<Element: Sendable>: Sendable {
    private let elements = Mutex<[Element]>([])

    var all: [Element] { elements.withLock { $0 } }

    func add(_ element: Element) { elements.withLock { $0.append(element) } }
}

/// Seconds since it was made, on the continuous clock.
func stopwatch() -> @Sendable () -> Double {
    let start = ContinuousClock.now
    return { start.duration(to: .now).seconds }
}
