import Foundation
import TroupeCore
import TroupeStore

/// A run's journal as Server-Sent Events: one event per journal event (`id:` its sequence
/// number, `event:` its type, `data:` the record as JSON), from `after` on, live until the run
/// has ended or needs attention and every event was sent. Idle streams get a comment line every
/// ``APIServer/keepAliveInterval``; a drain closes them (clients reconnect elsewhere with
/// `Last-Event-ID`, losing and repeating nothing).
///
/// The stream is pulled: the journal is read only as fast as the client takes the events, so a
/// client that stops reading holds at most one read's events in memory.
struct EventStream {
    let server: APIServer
    let run: RunID
    let after: Int

    func bytes() -> AsyncThrowingStream<ArraySlice<UInt8>, any Error> {
        let cursor = Cursor(server: server, run: run, sequence: after)
        return AsyncThrowingStream(unfolding: { await cursor.next() })
    }

    /// One SSE event. The JSON is on one line: the encoder escapes newlines in strings.
    static func frame(_ record: RunEventRecord) throws -> String {
        "id: \(record.sequence)\nevent: \(record.event.type)\ndata: \(try JSONCoding.encodeString(record))\n\n"
    }

    /// Where a stream stands: the last sequence number sent, and frames read but not yet sent.
    private actor Cursor {
        let server: APIServer
        let run: RunID
        var sequence: Int
        var pending: [ArraySlice<UInt8>] = []
        var ended = false
        let clock = ContinuousClock()
        var lastWrite: ContinuousClock.Instant

        init(server: APIServer, run: RunID, sequence: Int) {
            self.server = server
            self.run = run
            self.sequence = sequence
            self.lastWrite = ContinuousClock.now
        }

        /// The next chunk to send, `nil` at the end of the stream.
        func next() async -> ArraySlice<UInt8>? {
            do {
                while true {
                    if !pending.isEmpty {
                        lastWrite = clock.now
                        return pending.removeFirst()
                    }
                    if ended || server.drain.isDraining { return nil }
                    let summary = try await server.store.requireRun(run)
                    if summary.lastSequence > sequence {
                        let records = try await server.store.events(of: run, after: sequence)
                        pending = try records.map { ArraySlice(try EventStream.frame($0).utf8) }
                        sequence = records.last?.sequence ?? sequence
                        continue
                    }
                    if summary.status.isTerminal || summary.status == .needsAttention {
                        ended = true
                        return nil
                    }
                    if clock.now - lastWrite >= server.keepAliveInterval {
                        lastWrite = clock.now
                        return ArraySlice(": keep-alive\n\n".utf8)
                    }
                    try await Task.sleep(for: server.pollInterval)
                }
            } catch is CancellationError {
                return nil
            } catch {
                // The status line is gone: the stream ends, and the client reconnects with Last-Event-ID.
                server.logger.warning("event stream ended early", metadata: ["run": "\(run)", "error": "\(error)"])
                return nil
            }
        }
    }
}
