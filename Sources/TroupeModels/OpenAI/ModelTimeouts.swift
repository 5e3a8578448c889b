import Foundation
import Synchronization
public import TroupeCore

/// The time limits of one HTTP model call.
///
/// A hung server never hangs a run: the call fails with a `timeout` error that names the endpoint
/// and the limit that passed, and a ``RetryingModel`` above decides whether to try again (its
/// deadline for the whole call, all attempts included, is passed down and cuts an attempt in
/// flight too).
public struct ModelTimeouts: Sendable, Hashable, Codable {
    /// Opening the TCP (and TLS) connection. Applied by the HTTP client: clients made with
    /// ``OpenAIChatModel/httpClientConfiguration(timeouts:)`` or
    /// ``OpenAIChatModel/withHTTPClient(timeouts:_:)`` use it; a client you make yourself keeps
    /// its own.
    public var connectSeconds: Double
    /// From sending the request to the head of the answer. A non-streaming answer's head comes
    /// when the whole answer is ready, so this bounds the model's thinking time too.
    public var firstByteSeconds: Double
    /// The longest silence between two chunks of an answer's body.
    public var idleSeconds: Double
    /// The whole call, from sending the request to the last byte of the answer.
    public var totalSeconds: Double

    public init(connectSeconds: Double = 10, firstByteSeconds: Double = 90, idleSeconds: Double = 30, totalSeconds: Double = 150) {
        self.connectSeconds = connectSeconds
        self.firstByteSeconds = firstByteSeconds
        self.idleSeconds = idleSeconds
        self.totalSeconds = totalSeconds
    }

    /// The timeouts if they are usable, else an `invalidInput` error naming the field.
    public func validated() throws(TroupeError) -> ModelTimeouts {
        for (field, value) in [
            ("connectSeconds", connectSeconds), ("firstByteSeconds", firstByteSeconds), ("idleSeconds", idleSeconds),
            ("totalSeconds", totalSeconds),
        ] where !(value > 0 && value.isFinite) {
            throw TroupeError(.invalidInput, "The model timeout \(field) must be a number of seconds above zero (got \(value)).")
        }
        return self
    }
}

/// Watches one HTTP model call against its ``ModelTimeouts`` and the caller's
/// ``ModelCallDeadline``: ``expire()`` throws as soon as a limit passes (to within the sweeper's
/// resolution), and the call is cancelled.
final class CallTimer: Sendable {
    private struct State {
        var receiving = false
        var lastProgress: ContinuousClock.Instant
    }

    private let timeouts: ModelTimeouts
    private let endpoint: String
    /// Details every timeout error carries (the endpoint, the model).
    private let details: [String: String]
    private let start: ContinuousClock.Instant
    /// The end of the whole call: its own total limit or the caller's deadline, the sooner one.
    let deadline: ContinuousClock.Instant
    private let deadlineIsCallers: Bool
    private let state: Mutex<State>

    init(
        timeouts: ModelTimeouts,
        endpoint: String,
        details: [String: String],
        callerDeadline: ContinuousClock.Instant? = ModelCallDeadline.current
    ) {
        let now = ContinuousClock.now
        let own = now.advanced(by: .seconds(timeouts.totalSeconds))
        self.timeouts = timeouts
        self.endpoint = endpoint
        self.details = details
        self.start = now
        self.deadline = callerDeadline.map { min($0, own) } ?? own
        self.deadlineIsCallers = callerDeadline.map { $0 < own } ?? false
        self.state = Mutex(State(lastProgress: now))
    }

    /// The head of the answer arrived, or a chunk of its body.
    func received() {
        let now = ContinuousClock.now
        state.withLock {
            $0.receiving = true
            $0.lastProgress = now
        }
    }

    /// Returns never: throws the `timeout` error once a limit passes (``TimeoutSweeper`` checks),
    /// or a cancellation error once the call finished and cancelled it.
    func expire() async throws -> Never {
        try await TimeoutSweeper.shared.watch(self)
        preconditionFailure("A call timer ends with an error.")
    }

    /// The `timeout` error if a limit has passed at `now`.
    func expiry(at now: ContinuousClock.Instant) -> TroupeError? {
        let (due, phaseLimit, receiving) = state.withLock { state in
            state.receiving
                ? (state.lastProgress.advanced(by: .seconds(timeouts.idleSeconds)), timeouts.idleSeconds, true)
                : (start.advanced(by: .seconds(timeouts.firstByteSeconds)), timeouts.firstByteSeconds, false)
        }
        if now >= deadline { return expired(phaseLimit: nil, receiving: receiving) }
        if now >= due { return expired(phaseLimit: phaseLimit, receiving: receiving) }
        return nil
    }

    private func expired(phaseLimit: Double?, receiving: Bool) -> TroupeError {
        let elapsed = start.duration(to: .now).seconds
        let kind: String
        let message: String
        switch (phaseLimit, receiving) {
        case (let limit?, false):
            kind = "firstByte"
            message = "The model at \(endpoint) sent no answer within \(Self.format(limit)) s of the request (first-byte timeout)."
        case (let limit?, true):
            kind = "idle"
            message = "The model at \(endpoint) went silent for \(Self.format(limit)) s in the middle of its answer (idle timeout)."
        case (nil, _) where deadlineIsCallers:
            kind = "deadline"
            message =
                "The model call to \(endpoint) was cut after \(Self.format(elapsed)) s: the call's deadline passed "
                + (receiving ? "while the answer was arriving." : "before an answer came.")
        case (nil, _):
            kind = "total"
            message =
                "The model call to \(endpoint) did not finish within its limit of \(Self.format(timeouts.totalSeconds)) s (total timeout)."
        }
        return TroupeError(.timeout, message, details: details.merging(["timeout": kind]) { $1 })
    }

    private static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.2g", seconds)
    }
}

/// One clock for the time limits of every model call in the process: while calls are in flight, a
/// single task wakes every `resolution` and fails the timers whose limits have passed.
///
/// Not a timer per call: on Linux each `Task.sleep` is a dispatch timer, and one per model call
/// cost about 8% of the call's CPU (dispatch's manager thread, an eventfd write per sleep). Limits
/// are seconds; a tenth of a second late is no harm.
final class TimeoutSweeper: Sendable {
    static let shared = TimeoutSweeper(resolution: .milliseconds(100))

    private struct Watch {
        var timer: CallTimer
        var continuation: CheckedContinuation<Void, any Error>
    }

    /// A watch from its start to its end (then it is removed).
    private enum Slot {
        /// Not registered yet; `cancelled` if its task was cancelled meanwhile.
        case starting(cancelled: Bool)
        case watching(Watch)
    }

    private struct State {
        var slots: [UInt64: Slot] = [:]
        var nextID: UInt64 = 0
        var sweeping = false
    }

    private let resolution: Duration
    private let state = Mutex(State())

    init(resolution: Duration) {
        self.resolution = resolution
    }

    /// Throws `timer`'s timeout when a limit passes, or a cancellation error when the task is
    /// cancelled; never returns normally.
    func watch(_ timer: CallTimer) async throws {
        let id = state.withLock { state in
            state.nextID += 1
            state.slots[state.nextID] = .starting(cancelled: false)
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let (cancelled, startSweeping) = state.withLock { state -> (Bool, Bool) in
                    if case .starting(cancelled: true)? = state.slots[id] {
                        state.slots[id] = nil
                        return (true, false)
                    }
                    state.slots[id] = .watching(Watch(timer: timer, continuation: continuation))
                    defer { state.sweeping = true }
                    return (false, !state.sweeping)
                }
                if cancelled { continuation.resume(throwing: CancellationError()) }
                if startSweeping { Task.detached { await self.sweep() } }
            }
        } onCancel: {
            let watch = state.withLock { state -> Watch? in
                switch state.slots[id] {
                case .watching(let watch)?:
                    state.slots[id] = nil
                    return watch
                case .starting?:
                    state.slots[id] = .starting(cancelled: true)
                    return nil
                case nil:
                    return nil
                }
            }
            watch?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Checks the watches every `resolution` until there are none.
    private func sweep() async {
        while true {
            try? await Task.sleep(for: resolution)
            let now = ContinuousClock.now
            let (expired, done) = state.withLock { state -> ([(Watch, TroupeError)], Bool) in
                var expired: [(Watch, TroupeError)] = []
                for (id, slot) in state.slots {
                    guard case .watching(let watch) = slot, let error = watch.timer.expiry(at: now) else { continue }
                    state.slots[id] = nil
                    expired.append((watch, error))
                }
                if state.slots.isEmpty { state.sweeping = false }
                return (expired, !state.sweeping)
            }
            for (watch, error) in expired { watch.continuation.resume(throwing: error) }
            if done { return }
        }
    }
}
