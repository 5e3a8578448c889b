import Foundation
import Synchronization

/// Tells long-running work that its process is shutting down gracefully: finish what is in
/// hand, start nothing new. A worker begins it on the first SIGTERM; the drivers it runs stop
/// launching activities and hand their runs back once nothing is in flight.
///
/// It only ever goes from "running" to "draining", once.
public final class DrainSignal: Sendable {
    private struct State {
        var draining = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Whether draining has begun.
    public var isDraining: Bool {
        state.withLock { $0.draining }
    }

    /// Begins draining and wakes every ``wait()``; later calls do nothing.
    public func begin() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.draining else { return [] }
            state.draining = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once draining has begun, or as soon as the calling task is cancelled.
    public func wait() async {
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state in
                    if state.draining || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
