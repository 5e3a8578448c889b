public import TroupeCore
import Synchronization

/// A piece of a model's answer while it streams, for clients that follow a run live (the API's
/// `GET /v1/runs/{id}/events?tokens=true`). Never journaled: the journal records the whole
/// answer when the call completes, and live text that no one follows is simply dropped.
public struct LiveText: Sendable, Hashable, Codable {
    public var run: RunID
    /// The model call the text belongs to.
    public var activity: ActivityKey
    public var text: String

    public init(run: RunID, activity: ActivityKey, text: String) {
        self.run = run
        self.activity = activity
        self.text = text
    }
}

/// In-process fan-out of ``LiveText`` to the streams of the runs' followers.
package final class LiveTextHub: Sendable {
    /// Pieces a follower may have unread before newer ones are dropped (a client that does not read).
    package static let buffered = 4_096

    private struct Followers {
        var next: UInt64 = 0
        var byRun: [RunID: [UInt64: AsyncStream<LiveText>.Continuation]] = [:]
    }

    private let followers = Mutex(Followers())

    package init() {}

    /// The live text of `run` delivered from now on; ends when its reader stops or is cancelled.
    package func stream(of run: RunID) -> AsyncStream<LiveText> {
        let (stream, continuation) = AsyncStream.makeStream(of: LiveText.self, bufferingPolicy: .bufferingOldest(Self.buffered))
        let id = followers.withLock { followers in
            followers.next += 1
            followers.byRun[run, default: [:]][followers.next] = continuation
            return followers.next
        }
        continuation.onTermination = { [weak self] _ in
            self?.followers.withLock { followers in
                followers.byRun[run]?.removeValue(forKey: id)
                if followers.byRun[run]?.isEmpty == true { followers.byRun.removeValue(forKey: run) }
            }
        }
        return stream
    }

    /// Hands `text` to every follower of its run.
    package func deliver(_ text: LiveText) {
        guard let continuations = followers.withLock({ $0.byRun[text.run].map { Array($0.values) } }) else { return }
        for continuation in continuations { continuation.yield(text) }
    }
}
