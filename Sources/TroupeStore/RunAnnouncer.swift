import Synchronization

/// In-process wake-ups for workers: the streams ``RunStore/announcements()`` hands out, and the
/// announcement a store makes when a run may have become claimable.
package final class RunAnnouncer: Sendable {
    private struct Listeners {
        var next: UInt64 = 0
        var continuations: [UInt64: AsyncStream<Void>.Continuation] = [:]
    }

    private let listeners = Mutex(Listeners())

    package init() {}

    /// A new stream of announcements. It keeps at most one unread (announcements are hints, and
    /// one is as good as many), and ends when its reader stops iterating or is cancelled.
    package func stream() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let id = listeners.withLock { listeners in
            listeners.next += 1
            listeners.continuations[listeners.next] = continuation
            return listeners.next
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.listeners.withLock { $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    /// Wakes every stream.
    package func announce() {
        for continuation in listeners.withLock({ Array($0.continuations.values) }) { continuation.yield() }
    }
}
