import Foundation
public import Logging
public import Metrics
import Synchronization
public import TroupeCore

/// The circuit breaker's rules, as a pure state machine: no clock, no I/O. Times are seconds on
/// any monotonic clock the owner reads.
///
/// - closed: calls go ahead. It opens after `consecutiveFailures` failures in a row, or when at
///   least `minimumCalls` of the last `window` calls were made and `failureRate` of them failed.
/// - open: calls are refused until `coolDownSeconds` have passed; then it is half-open.
/// - half-open: `probes` calls at a time go ahead; a success closes it, a failure opens it again.
///
/// Only failures that say the server is unwell count (see ``TroupeError/isRetryable``); a refused
/// request (400, 401…) is the caller's problem and counts as a success.
public struct CircuitBreaker: Sendable, Hashable {
    public enum State: String, Sendable, Hashable, Codable {
        case closed, open, halfOpen
    }

    public struct Policy: Sendable, Hashable, Codable {
        public var consecutiveFailures: Int
        public var failureRate: Double
        public var window: Int
        public var minimumCalls: Int
        public var coolDownSeconds: Double
        public var probes: Int

        public init(
            consecutiveFailures: Int = 5, failureRate: Double = 0.5, window: Int = 20, minimumCalls: Int = 10,
            coolDownSeconds: Double = 30, probes: Int = 1
        ) {
            self.consecutiveFailures = max(1, consecutiveFailures)
            self.failureRate = min(1, max(0, failureRate))
            self.window = max(1, window)
            self.minimumCalls = max(1, minimumCalls)
            self.coolDownSeconds = max(0, coolDownSeconds)
            self.probes = max(1, probes)
        }
    }

    public let policy: Policy
    public private(set) var state: State = .closed
    /// When it last opened.
    public private(set) var openedAt: Double?
    /// The outcomes of the last `window` calls while closed (`true` = failed), oldest first.
    private var recent: [Bool] = []
    private var consecutive = 0
    private var probing = 0

    public init(policy: Policy = Policy()) {
        self.policy = policy
    }

    /// Whether a call may go ahead at `now`; a `true` must be followed by ``record(failed:at:)``.
    public mutating func permit(at now: Double) -> Bool {
        switch state {
        case .closed:
            return true
        case .open:
            guard let openedAt, now - openedAt >= policy.coolDownSeconds else { return false }
            state = .halfOpen
            probing = 1
            return true
        case .halfOpen:
            guard probing < policy.probes else { return false }
            probing += 1
            return true
        }
    }

    /// Records a permitted call's outcome.
    public mutating func record(failed: Bool, at now: Double) {
        switch state {
        case .closed:
            consecutive = failed ? consecutive + 1 : 0
            recent.append(failed)
            if recent.count > policy.window { recent.removeFirst(recent.count - policy.window) }
            let failures = recent.filter { $0 }.count
            let rateExceeded =
                recent.count >= policy.minimumCalls && Double(failures) / Double(recent.count) >= policy.failureRate && failures > 0
            if consecutive >= policy.consecutiveFailures || rateExceeded { open(at: now) }
        case .halfOpen:
            probing = max(0, probing - 1)
            if failed {
                open(at: now)
            } else {
                state = .closed
                recent = []
                consecutive = 0
                probing = 0
            }
        case .open:
            break  // a call permitted before it opened: the breaker has decided already
        }
    }

    /// Forgets a permitted call that ended without an outcome (it was cancelled: a step's time
    /// limit, a cancelled run). A half-open probe's slot is freed for another probe; nothing is
    /// learned about the server either way.
    public mutating func abandon() {
        if state == .halfOpen { probing = max(0, probing - 1) }
    }

    private mutating func open(at now: Double) {
        state = .open
        openedAt = now
        probing = 0
    }
}

/// Refuses calls to a model that has been failing, so a run fails fast (or a ``FallbackModel``
/// moves on) instead of waiting on a server that is down, and probes it again after a cool-down.
/// State changes are logged (`circuit breaker opened` / `half-open` / `closed`), reported to
/// `onStateChange` and kept in the gauge `troupe_model_circuit_state` (0 closed, 1 half-open,
/// 2 open; dimension `model`); refused calls count in `troupe_model_circuit_refusals_total`.
public final class CircuitBreakerModel: ChatModel, Sendable {
    public let base: any ChatModel
    /// Names the model in errors and logs (an endpoint, say).
    public let name: String
    private let breaker: Mutex<CircuitBreaker>
    /// The last failure that counted against the model, for the refusals' message.
    private let lastFailure = Mutex<String?>(nil)
    private let seconds: @Sendable () -> Double
    private let logger: Logger
    private let onStateChange: @Sendable (CircuitBreaker.State) -> Void
    private let stateGauge: Gauge
    private let refusals: Counter

    /// - Parameter metrics: where the state gauge and refusal counter go; the process's metrics
    ///   system by default (a no-op until one is bootstrapped).
    public init(
        _ base: any ChatModel,
        name: String,
        policy: CircuitBreaker.Policy = CircuitBreaker.Policy(),
        clock: any Clock<Duration> = ContinuousClock(),
        logger: Logger = Logger(label: "troupe.model"),
        metrics: any MetricsFactory = MetricsSystem.factory,
        onStateChange: @escaping @Sendable (CircuitBreaker.State) -> Void = { _ in }
    ) {
        self.base = base
        self.name = name
        self.breaker = Mutex(CircuitBreaker(policy: policy))
        self.seconds = stopwatch(clock)
        self.logger = logger
        self.onStateChange = onStateChange
        self.stateGauge = Gauge(label: "troupe_model_circuit_state", dimensions: [("model", name)], factory: metrics)
        self.refusals = Counter(label: "troupe_model_circuit_refusals_total", dimensions: [("model", name)], factory: metrics)
        stateGauge.record(0)
    }

    /// The breaker's state now.
    public var state: CircuitBreaker.State { breaker.withLock { $0.state } }

    public func complete(_ request: ChatRequest) async throws -> ChatResponse {
        try admit()
        do {
            let response = try await base.complete(request)
            settle(failed: false)
            return response
        } catch {
            settle(after: error)
            throw error
        }
    }

    public func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
        .producing { [self] continuation in
            try admit()
            do {
                for try await event in base.stream(request) { continuation.yield(event) }
                settle(failed: false)
            } catch {
                settle(after: error)
                throw error
            }
        }
    }

    private func admit() throws {
        let now = seconds()
        let (permitted, before, after, openedAt) = breaker.withLock { breaker in
            let before = breaker.state
            let permitted = breaker.permit(at: now)
            return (permitted, before, breaker.state, breaker.openedAt)
        }
        if before != after { changed(to: after) }
        guard permitted else {
            refusals.increment()
            let wait = max(0, (openedAt ?? now) + breaker.withLock { $0.policy.coolDownSeconds } - now)
            let last = lastFailure.withLock { $0 }.map { " The last failure: \($0)" } ?? ""
            throw TroupeError(
                .circuitOpen,
                "The circuit breaker for \(name) is open after repeated failures; calls are refused for "
                    + "\(String(format: "%.0f", wait)) s more.\(last)",
                details: ["model": name, "retryInSeconds": String(format: "%.1f", wait)]
            )
        }
    }

    /// Counts a failed call against the model if it says the server is unwell. A cancelled call
    /// says nothing about the server: it is neither a success nor a failure.
    private func settle(after error: any Error) {
        let failure = TroupeError.wrap(error, as: .modelAPI)
        if failure.code == .cancelled {
            breaker.withLock { $0.abandon() }
            return
        }
        if failure.isRetryable { lastFailure.withLock { $0 = failure.message } }
        settle(failed: failure.isRetryable)
    }

    private func settle(failed: Bool) {
        let now = seconds()
        let (before, after) = breaker.withLock { breaker in
            let before = breaker.state
            breaker.record(failed: failed, at: now)
            return (before, breaker.state)
        }
        if before != after { changed(to: after) }
    }

    private func changed(to state: CircuitBreaker.State) {
        let message: Logger.Message =
            switch state {
            case .open: "circuit breaker opened"
            case .halfOpen: "circuit breaker half-open: probing"
            case .closed: "circuit breaker closed"
            }
        logger.log(level: state == .open ? .warning : .info, message, metadata: ["model": "\(name)", "state": "\(state.rawValue)"])
        stateGauge.record(state.gaugeValue)
        onStateChange(state)
    }
}

extension CircuitBreaker.State {
    /// The state as the gauge shows it: 0 closed, 1 half-open, 2 open.
    var gaugeValue: Int {
        switch self {
        case .closed: 0
        case .halfOpen: 1
        case .open: 2
        }
    }
}
