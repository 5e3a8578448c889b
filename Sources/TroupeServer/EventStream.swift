import Foundation
import TroupeCore
import TroupeStore

/// A run's journal as Server-Sent Events: one event per journal event (`id:` its sequence
/// number, `event:` its type, `data:` the record as JSON), from `after` on, live until the run
/// has ended or needs attention and every event was sent. Idle streams get a comment line every
/// ``APIServer/keepAliveInterval``; a drain closes them (clients reconnect elsewhere with
/// `Last-Event-ID`, losing and repeating nothing).
struct EventStream {
    let server: APIServer
    let run: RunID
    let after: Int

    func bytes() -> AsyncThrowingStream<ArraySlice<UInt8>, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: ArraySlice<UInt8>.self)
        let task = Task { [server, run, after] in
            let clock = ContinuousClock()
            var sequence = after
            var lastWrite = clock.now
            do {
                while !Task.isCancelled && !server.drain.isDraining {
                    let summary = try await server.store.requireRun(run)
                    if summary.lastSequence > sequence {
                        for record in try await server.store.events(of: run, after: sequence) {
                            continuation.yield(ArraySlice(try Self.frame(record).utf8))
                            sequence = record.sequence
                        }
                        lastWrite = clock.now
                    }
                    if (summary.status.isTerminal || summary.status == .needsAttention) && sequence >= summary.lastSequence { break }
                    if clock.now - lastWrite >= server.keepAliveInterval {
                        continuation.yield(ArraySlice(": keep-alive\n\n".utf8))
                        lastWrite = clock.now
                    }
                    try await Task.sleep(for: server.pollInterval)
                }
                continuation.finish()
            } catch is CancellationError {
                continuation.finish()
            } catch {
                // The status line is gone: the stream ends, and the client reconnects with Last-Event-ID.
                server.logger.warning("event stream ended early", metadata: ["run": "\(run)", "error": "\(error)"])
                continuation.finish()
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// One SSE event. The JSON is on one line: the encoder escapes newlines in strings.
    static func frame(_ record: RunEventRecord) throws -> String {
        "id: \(record.sequence)\nevent: \(record.event.type)\ndata: \(try JSONCoding.encodeString(record))\n\n"
    }
}
