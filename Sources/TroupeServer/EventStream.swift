import Foundation
import TroupeCore
import TroupeStore

/// A run's journal as Server-Sent Events: one event per journal event (`id:` its sequence
/// number, `event:` its type, `data:` the record as JSON), from `after` on, live until the run
/// has ended or needs attention and every event was sent. Idle streams get a comment line every
/// ``APIServer/keepAliveInterval``; a drain closes them (clients reconnect elsewhere with
/// `Last-Event-ID`, losing and repeating nothing). With `tokens`, the text of streaming model
/// calls comes too as it is published (``RunStore/liveText(of:)``), as `token` events without
/// an `id:`.
///
/// The stream is pulled: the journal is read only as fast as the client takes the events, so a
/// client that stops reading holds at most one read's events in memory (and, with `tokens`, at
/// most ``maxUnsentTextBytes`` of text).
struct EventStream {
    let server: APIServer
    /// The store as the caller reaches it (its tenant's runs only).
    let store: any RunStore
    let run: RunID
    let after: Int
    var tokens = false
    /// The key the stream was opened with, checked again every ``APIServer/keyCheckInterval``: a
    /// stream ends once its key is revoked or expired (`nil` on a server without keys).
    var keyID: String?
    /// The stream's place among its key's open streams, given back once the stream is gone.
    var slot: StreamCounter.Slot?

    /// How often live text is looked for between journal reads.
    static let tokenInterval = Duration.milliseconds(50)
    /// Live text a stream holds for a client that does not read; newer text is dropped.
    static let maxUnsentTextBytes = 1 << 20

    func bytes() -> AsyncThrowingStream<ArraySlice<UInt8>, any Error> {
        let cursor = Cursor(
            server: server, store: store, run: run, sequence: after, liveText: tokens ? store.liveText(of: run) : nil, keyID: keyID)
        return AsyncThrowingStream(unfolding: { [slot] in
            withExtendedLifetime(slot) {}
            return await cursor.next()
        })
    }

    /// One SSE event. The JSON is on one line: the encoder escapes newlines in strings.
    static func frame(_ record: RunEventRecord) throws -> String {
        "id: \(record.sequence)\nevent: \(record.event.type)\ndata: \(try JSONCoding.encodeString(record))\n\n"
    }

    /// A `token` event: live text, not journaled, so without an `id:`.
    static func frame(_ text: LiveText) throws -> String {
        "event: token\ndata: \(try JSONCoding.encodeString(text))\n\n"
    }

    /// Where a stream stands: the last sequence number sent, frames read but not yet sent, and
    /// live text received but not yet sent.
    private actor Cursor {
        let server: APIServer
        let store: any RunStore
        let run: RunID
        var sequence: Int
        var pending: [ArraySlice<UInt8>] = []
        var text: [LiveText] = []
        var textBytes = 0
        var ended = false
        let clock = ContinuousClock()
        var lastWrite: ContinuousClock.Instant
        var nextRead: ContinuousClock.Instant
        let followsText: Bool
        /// The live text to follow until the feeder takes it (on the first ``next()``).
        var liveText: AsyncStream<LiveText>?
        var feeder: Task<Void, Never>?

        let keyID: String?
        var nextKeyCheck: ContinuousClock.Instant

        init(server: APIServer, store: any RunStore, run: RunID, sequence: Int, liveText: AsyncStream<LiveText>?, keyID: String?) {
            self.store = store
            self.keyID = keyID
            self.nextKeyCheck = ContinuousClock.now + server.keyCheckInterval
            self.server = server
            self.run = run
            self.sequence = sequence
            self.lastWrite = ContinuousClock.now
            self.nextRead = ContinuousClock.now
            self.followsText = liveText != nil
            self.liveText = liveText
        }

        deinit { feeder?.cancel() }

        func receive(_ piece: LiveText) {
            // A client that does not read loses the newest text beyond the cap (a preview only).
            guard textBytes + piece.text.utf8.count <= EventStream.maxUnsentTextBytes else { return }
            textBytes += piece.text.utf8.count
            // Consecutive pieces of one call are sent as one event.
            if let last = text.last, last.activity == piece.activity {
                text[text.count - 1].text += piece.text
            } else {
                text.append(piece)
            }
        }

        /// The next chunk to send, `nil` at the end of the stream.
        func next() async -> ArraySlice<UInt8>? {
            if let liveText {
                self.liveText = nil
                feeder = Task { [weak self] in
                    for await piece in liveText {
                        guard let self else { return }
                        await self.receive(piece)
                    }
                }
            }
            do {
                while true {
                    if !pending.isEmpty {
                        lastWrite = clock.now
                        return pending.removeFirst()
                    }
                    if ended || server.drain.isDraining {
                        feeder?.cancel()
                        return nil
                    }
                    if clock.now >= nextKeyCheck, let keyID, case .keys(let keys) = server.access {
                        nextKeyCheck = clock.now + server.keyCheckInterval
                        guard let record = try await keys.key(id: keyID), record.isActive(at: server.now()) else {
                            ended = true
                            continue
                        }
                    }
                    if !text.isEmpty {
                        lastWrite = clock.now
                        let piece = text.removeFirst()
                        textBytes -= piece.text.utf8.count
                        return ArraySlice(try EventStream.frame(piece).utf8)
                    }
                    if clock.now >= nextRead {
                        nextRead = clock.now + server.pollInterval
                        let summary = try await store.requireRun(run)
                        if summary.lastSequence > sequence {
                            let records = try await store.events(of: run, after: sequence)
                            pending = try records.map { ArraySlice(try EventStream.frame($0).utf8) }
                            sequence = records.last?.sequence ?? sequence
                            continue
                        }
                        if summary.status.isTerminal || summary.status == .needsAttention {
                            ended = true
                            continue
                        }
                    }
                    if clock.now - lastWrite >= server.keepAliveInterval {
                        lastWrite = clock.now
                        return ArraySlice(": keep-alive\n\n".utf8)
                    }
                    try await Task.sleep(for: followsText ? min(EventStream.tokenInterval, server.pollInterval) : server.pollInterval)
                }
            } catch is CancellationError {
                feeder?.cancel()
                return nil
            } catch {
                // The status line is gone: the stream ends, and the client reconnects with Last-Event-ID.
                server.logger.warning("event stream ended early", metadata: ["run": "\(run)", "error": "\(error)"])
                feeder?.cancel()
                return nil
            }
        }
    }
}
