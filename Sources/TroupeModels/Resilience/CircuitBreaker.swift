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
    /// Moves on with every change of state: a call let through in one state cannot decide the
    /// outcome of another (a slow call admitted while closed must not close a half-open breaker
    /// in place of its probe).
    private var generation = 0

    /// A call let through, and the state it was let through in.
    public struct Permit: Sendable, Hashable {
        fileprivate var generation: Int
        fileprivate var probe: Bool
    }

    public init(policy: Policy = Policy()) {
        self.policy = policy
    }

    /// Whether a call may go ahead at `now`; a `true` must be followed by ``record(failed:at:)``.
    public mutating func permit(at now: Double) -> Bool {
        admit(at: now) != nil
    }

    /// Lets a call through at `now`, or `nil`; the permit must be followed by
    /// ``record(_:failed:at:)`` or ``abandon(_:)``.
    public mutating func admit(at now: Double) -> Permit? {
        switch state {
        case .closed:
            return Permit(generation: generation, probe: false)
        case .open:
            guard let openedAt, now - openedAt >= policy.coolDownSeconds else { return nil }
            state = .halfOpen
            generation += 1
            probing = 1
            return Permit(generation: generation, probe: true)
        case .halfOpen:
            guard probing < policy.probes else { return nil }
            probing += 1
            return Permit(generation: generation, probe: true)
        }
    }

    /// Records the outcome of a call let through in the current state.
    public mutating func record(failed: Bool, at now: Double) {
        record(Permit(generation: generation, probe: state == .halfOpen), failed: failed, at: now)
    }

    /// Records a permitted call's outcome. A call let through in an earlier state only frees its
    /// probe slot, if it had one: it says nothing about the state the breaker is in now.
    public mutating func record(_ permit: Permit, failed: Bool, at now: Double) {
        guard permit.generation == generation else { return }
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
            guard permit.probe else { return }
            if failed {
                open(at: now)
            } else {
                state = .closed
                generation += 1
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

    /// Forgets a permitted call that ended without an outcome (see ``abandon()``).
    public mutating func abandon(_ permit: Permit) {
        if permit.probe, permit.generation == generation { abandon() }
    }

    private mutating func open(at now: Double) {
        state = .open
        generation += 1
        openedAt = now
        probing = 0
    }
}

/// Refuses calls to a model that has been failing, so a run fails fast (or a ``FallbackModel``
/// moves on) instead of waiting on a server that is down, and probes it again after a cool-down.
/// State changes are logged (`circuit breaker opened` / `half-open` / `closed`), reported to
/// `onStateChange` and kept in the gauge `troupe_model_circuit_state` (0 closed, 1 half-open,
/// 2 open; dimension `model`); refused calls count in `troupe_model_circuit_refusals_total`.
/// Changes are reported under the breaker's lock, in the order they happened: `onStateChange`
/// must not call back into this model.
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
        let permit = try admit()
        do {
            let response = try await base.complete(request)
            settle(permit, failed: false)
            return response
        } catch {
            settle(permit, after: error)
            throw error
        }
    }

    public func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
        .producing { [self] continuation in
            let permit = try admit()
            do {
                var completed = false
                for try await event in base.stream(request) {
                    if case .completed = event { completed = true }
                    continuation.yield(event)
                }
                // A stream cut by cancellation ends without throwing: only an answer seen whole
                // is evidence that the server is well.
                if completed {
                    settle(permit, failed: false)
                } else {
                    breaker.withLock { $0.abandon(permit) }
                }
            } catch {
                settle(permit, after: error)
                throw error
            }
        }
    }

    private func admit() throws -> CircuitBreaker.Permit {
        let now = seconds()
        // State changes are reported under the lock, so the log and the gauge follow the
        // breaker's own order of changes.
        let (permit, openedAt, coolDown) = breaker.withLock { breaker in
            let before = breaker.state
            let permit = breaker.admit(at: now)
            if before != breaker.state { changed(to: breaker.state) }
            return (permit, breaker.openedAt, breaker.policy.coolDownSeconds)
        }
        guard let permit else {
            refusals.increment()
            let wait = max(0, (openedAt ?? now) + coolDown - now)
            let last = lastFailure.withLock { $0 }.map { " The last failure: \($0)" } ?? ""
            throw TroupeError(
                .circuitOpen,
                "The circuit breaker for \(name) is open after repeated failures; calls are refused for "
                    + "\(String(format: "%.0f", wait)) s more.\(last)",
                details: ["model": name, "retryInSeconds": String(format: "%.1f", wait)]
            )
        }
        return permit
    }

    /// Counts a failed call against the model if it says the server is unwell. A cancelled call
    /// says nothing about the server, and neither does a refusal of this process's own rate
    /// limiter (the server was never asked): neither a success nor a failure.
    private func settle(_ permit: CircuitBreaker.Permit, after error: any Error) {
        let failure = TroupeError.wrap(error, as: .modelAPI)
        if failure.code == .cancelled || Task.isCancelled || failure.details["source"] == RateLimiter.source {
            breaker.withLock { $0.abandon(permit) }
            return
        }
        if failure.isRetryable { lastFailure.withLock { $0 = failure.message } }
        settle(permit, failed: failure.isRetryable)
    }

    private func settle(_ permit: CircuitBreaker.Permit, failed: Bool) {
        let now = seconds()
        breaker.withLock { breaker in
            let before = breaker.state
            breaker.record(permit, failed: failed, at: now)
            if before != breaker.state { changed(to: breaker.state) }
        }
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
