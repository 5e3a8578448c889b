import Logging
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

/// Log lines, as a ``RecordingLogHandler`` writes them (message and metadata).
final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func add(_ line: String) { lines.withLock { $0.append(line) } }
}

/// Records every log line (at every level) in ``LogLines``.
struct RecordingLogHandler: LogHandler {
    let lines: LogLines
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        lines.add("\(event.level) \(event.message) \(fields)")
    }
}
