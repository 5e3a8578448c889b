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
/// ``ModelCallDeadline``: ``expire()`` throws as soon as a limit passes, and the call is cancelled.
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

    /// Returns never: sleeps until a limit passes, then throws the `timeout` error. Ends with a
    /// cancellation error once the call finished and cancelled it.
    func expire() async throws -> Never {
        while true {
            let now = ContinuousClock.now
            let (due, phaseLimit, receiving) = state.withLock { state in
                state.receiving
                    ? (state.lastProgress.advanced(by: .seconds(timeouts.idleSeconds)), timeouts.idleSeconds, true)
                    : (start.advanced(by: .seconds(timeouts.firstByteSeconds)), timeouts.firstByteSeconds, false)
            }
            if now >= deadline { throw expired(phaseLimit: nil, receiving: receiving) }
            if now >= due { throw expired(phaseLimit: phaseLimit, receiving: receiving) }
            // Waiting for the head, it wakes at least once per idle limit: once the answer has
            // begun, the idle limit counts from its last chunk, which cannot be earlier.
            let wake = receiving ? due : min(due, now.advanced(by: .seconds(timeouts.idleSeconds)))
            try await Task.sleep(until: min(wake, deadline), clock: .continuous)
        }
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
