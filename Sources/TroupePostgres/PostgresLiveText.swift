import Foundation
import Logging
import PostgresNIO
import Synchronization
import TroupeCore
import TroupeStore

/// Live text across processes: drivers' pieces are gathered for ``flushInterval`` and sent with
/// `NOTIFY` on ``channel`` (one notification per model call and interval, split below
/// PostgreSQL's 8,000-byte payload limit); followers in any process get them through one
/// `LISTEN` connection per store, opened when the first follower comes.
final class PostgresLiveText: Sendable {
    static let channel = "troupe_text"
    static let flushInterval = Duration.milliseconds(50)
    /// The most text bytes in one notification (the JSON around it stays under 8,000 bytes).
    static let maxPieceBytes = 6_000

    private struct State {
        /// Text not yet sent, by run and model call, in the order it came.
        var unsent: [LiveTextKey: String] = [:]
        var order: [LiveTextKey] = []
        var flusher: Task<Void, Never>?
        var listener: Task<Void, Never>?
        var stopped = false
    }

    private struct LiveTextKey: Hashable {
        var run: RunID
        var activity: ActivityKey
    }

    private let client: PostgresClient
    private let logger: Logger
    private let hub = LiveTextHub()
    private let state = Mutex(State())

    init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    func publish(_ text: LiveText) {
        guard !text.text.isEmpty else { return }
        state.withLock { state in
            guard !state.stopped else { return }
            let key = LiveTextKey(run: text.run, activity: text.activity)
            if state.unsent[key] == nil { state.order.append(key) }
            state.unsent[key, default: ""] += text.text
            if state.flusher == nil { state.flusher = Task { await self.flushing() } }
        }
    }

    func stream(of run: RunID) -> AsyncStream<LiveText> {
        let stream = hub.stream(of: run)
        state.withLock { state in
            guard !state.stopped, state.listener == nil else { return }
            state.listener = PostgresListener.listening(
                on: Self.channel, client: client, logger: logger, while: { [weak self] in self?.isStopped == false }
            ) { [hub] event in
                guard case .notification(let payload) = event,
                    let text = try? JSONCoding.decode(LiveText.self, from: Data(payload.utf8))
                else { return }
                hub.deliver(text)
            }
        }
        return stream
    }

    private var isStopped: Bool { state.withLock(\.stopped) }

    /// Stops sending and listening (the store is closing).
    func stop() async {
        let tasks = state.withLock { state in
            state.stopped = true
            return [state.flusher, state.listener].compactMap { $0 }
        }
        for task in tasks {
            task.cancel()
            await task.value
        }
    }

    /// Sends what was gathered every ``flushInterval``; ends after an interval with nothing to send.
    private func flushing() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.flushInterval)
            let batch: [LiveText] = state.withLock { state in
                let batch = state.order.compactMap { key in
                    state.unsent[key].map { LiveText(run: key.run, activity: key.activity, text: $0) }
                }
                state.unsent = [:]
                state.order = []
                if batch.isEmpty { state.flusher = nil }
                return batch
            }
            if batch.isEmpty { return }
            let payloads = batch.flatMap(Self.payloads)
            do {
                try await client.withConnection { connection in
                    for payload in payloads {
                        try await connection.query("SELECT pg_notify(\(Self.channel), \(payload))", logger: self.logger)
                    }
                }
            } catch {
                // Live text is a preview: what cannot be sent now is dropped, never retried late.
                logger.debug("live text not sent", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The most bytes of one notification's payload (PostgreSQL refuses 8,000 and more).
    static let maxPayloadBytes = 7_900

    /// `text` as notification payloads (JSON), split on character boundaries so that each one,
    /// escaped, stays below ``maxPayloadBytes``.
    static func payloads(_ text: LiveText) -> [String] {
        splitting(text).flatMap { piece -> [String] in
            guard let payload = try? JSONCoding.encodeString(piece) else { return [] }
            if payload.utf8.count <= maxPayloadBytes { return [payload] }
            // Escaping grew it (quotes, backslashes, control characters): halve it and try again.
            let characters = Array(piece.text)
            guard characters.count > 1 else { return [] }
            let half = characters.count / 2
            return [String(characters[..<half]), String(characters[half...])].flatMap {
                payloads(LiveText(run: piece.run, activity: piece.activity, text: $0))
            }
        }
    }

    /// `text` in pieces of at most ``maxPieceBytes`` bytes, on character boundaries.
    private static func splitting(_ text: LiveText) -> [LiveText] {
        var pieces: [String] = []
        var piece = ""
        var bytes = 0
        for character in text.text {
            let size = character.utf8.count
            if bytes + size > maxPieceBytes, !piece.isEmpty {
                pieces.append(piece)
                piece = ""
                bytes = 0
            }
            piece.append(character)
            bytes += size
        }
        if !piece.isEmpty { pieces.append(piece) }
        return pieces.map { LiveText(run: text.run, activity: text.activity, text: $0) }
    }
}

/// `LISTEN` on a channel over a connection of its own, for as long as the task runs.
enum PostgresListener {
    enum Event {
        /// A connection listens (again): notifications sent while there was none are gone.
        case connected
        case notification(payload: String)
        /// The listening stopped for good (cancelled, or `isOpen` said no).
        case ended
    }

    /// Listens on `channel` while `isOpen` and until the task is cancelled, telling `received`.
    /// A dropped connection is opened again after 1 s, doubling up to 10 s while connections do
    /// not last 30 s.
    static func listening(
        on channel: String, client: PostgresClient, logger: Logger, while isOpen: @escaping @Sendable () async -> Bool,
        _ received: @escaping @Sendable (Event) -> Void
    ) -> Task<Void, Never> {
        Task {
            var pause = Duration.seconds(1)
            while !Task.isCancelled, await isOpen() {
                let started = ContinuousClock.now
                do {
                    try await client.withConnection { connection in
                        try await connection.listen(on: channel) { notifications in
                            received(.connected)
                            for try await notification in notifications { received(.notification(payload: notification.payload)) }
                        }
                    }
                } catch {
                    if Task.isCancelled { break }
                    logger.debug("LISTEN \(channel) failed; trying again", metadata: ["error": "\(error)"])
                }
                // Only a connection that lasted starts the back-off again: one dropped as soon as
                // it is made (a pooler, an idle killer) must not reconnect every second.
                if ContinuousClock.now - started > .seconds(30) { pause = .seconds(1) }
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(10))
            }
            received(.ended)
        }
    }
}
