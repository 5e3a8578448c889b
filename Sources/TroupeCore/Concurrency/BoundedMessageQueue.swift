import Foundation
import Synchronization

/// A queue of messages between one producer and one consumer that holds at most `limit` bytes:
/// a producer that gets ahead waits (back-pressure) instead of growing the queue without bound.
///
/// A message larger than the limit is still taken when the queue is empty, so nothing is stuck.
/// ``finish()`` ends the queue: the consumer gets what is left, then `nil`; a producer waiting
/// for room is let go (its message dropped, `send` returns `false`).
package final class BoundedMessageQueue: Sendable {
    private struct State {
        var messages: [Data] = []
        var head = 0
        var bytes = 0
        var finished = false
        var consumer: CheckedContinuation<Data?, Never>?
        var producer: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())
    /// The most bytes held before a producer waits.
    package let limit: Int

    package init(limit: Int) {
        self.limit = limit
    }

    /// Adds `message`, waiting while the queue is full; `false` if the queue was finished.
    @discardableResult
    package func send(_ message: Data) async -> Bool {
        while true {
            let outcome = state.withLock { state -> (accepted: Bool?, wake: CheckedContinuation<Data?, Never>?) in
                if state.finished { return (false, nil) }
                guard state.bytes == 0 || state.bytes + message.count <= limit else { return (nil, nil) }
                if let consumer = state.consumer {
                    state.consumer = nil
                    return (true, consumer)
                }
                state.messages.append(message)
                state.bytes += message.count
                return (true, nil)
            }
            if let accepted = outcome.accepted {
                outcome.wake?.resume(returning: message)
                return accepted
            }
            if Task.isCancelled { return false }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state -> Bool in
                        // Room was made (or the queue ended, or the task was cancelled) since the check.
                        if state.finished || state.bytes == 0 || state.bytes + message.count <= limit || Task.isCancelled { return true }
                        state.producer = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            } onCancel: {
                state.withLock { state in
                    defer { state.producer = nil }
                    return state.producer
                }?.resume()
            }
        }
    }

    /// The next message, waiting for one; `nil` once the queue is finished and empty, or when
    /// the waiting task is cancelled.
    package func next() async -> Data? {
        await withTaskCancellationHandler {
            await take()
        } onCancel: {
            state.withLock { state in
                defer { state.consumer = nil }
                return state.consumer
            }?.resume(returning: nil)
        }
    }

    private func take() async -> Data? {
        if Task.isCancelled { return nil }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Data?, Never>) in
            let (value, ready, wake) = state.withLock { state -> (Data?, Bool, CheckedContinuation<Void, Never>?) in
                if state.head < state.messages.count {
                    let message = state.messages[state.head]
                    state.head += 1
                    state.bytes -= message.count
                    if state.head > 64 && state.head * 2 > state.messages.count {
                        state.messages.removeFirst(state.head)
                        state.head = 0
                    }
                    let producer = state.producer
                    state.producer = nil
                    return (message, true, producer)
                }
                if state.finished || Task.isCancelled { return (nil, true, nil) }
                state.consumer = continuation
                return (nil, false, nil)
            }
            wake?.resume()
            if ready { continuation.resume(returning: value) }
        }
    }

    /// Ends the queue: what is held is still delivered, then `nil`.
    package func finish() {
        let (consumer, producer) = state.withLock { state -> (CheckedContinuation<Data?, Never>?, CheckedContinuation<Void, Never>?) in
            state.finished = true
            defer {
                state.consumer = nil
                state.producer = nil
            }
            return (state.messages.count > state.head ? nil : state.consumer, state.producer)
        }
        consumer?.resume(returning: nil)
        producer?.resume()
    }

    /// The bytes held now.
    package var heldBytes: Int { state.withLock { $0.bytes } }
}
