import Foundation
import Synchronization
public import TroupeCore

/// A token bucket, as a pure value: `capacity` units, refilled at `refillPerSecond`. Times are
/// seconds on any monotonic clock the owner reads.
///
/// Reservations may drive the level below zero: each caller is told how long to wait for its
/// share, so callers are served in the order they asked (no retry loops, no starvation of large
/// requests).
public struct TokenBucket: Sendable, Hashable {
    public let capacity: Double
    public let refillPerSecond: Double
    public private(set) var level: Double
    private var updatedAt: Double

    public init(capacity: Double, refillPerSecond: Double, at now: Double) {
        self.capacity = max(0, capacity)
        self.refillPerSecond = max(0, refillPerSecond)
        self.level = self.capacity
        self.updatedAt = now
    }

    /// A bucket for `perMinute` units a minute, full at the start.
    public init(perMinute: Int, at now: Double) {
        self.init(capacity: Double(perMinute), refillPerSecond: Double(perMinute) / 60, at: now)
    }

    /// Takes `amount`; returns the seconds to wait before using it (0 if it is there now).
    public mutating func reserve(_ amount: Double, at now: Double) -> Double {
        refill(at: now)
        level -= amount
        guard level < 0 else { return 0 }
        return refillPerSecond > 0 ? -level / refillPerSecond : .infinity
    }

    /// Gives back (positive) or takes more (negative) once the real cost is known.
    public mutating func adjust(by amount: Double, at now: Double) {
        refill(at: now)
        level = min(capacity, level + amount)
    }

    private mutating func refill(at now: Double) {
        let elapsed = max(0, now - updatedAt)
        level = min(capacity, level + elapsed * refillPerSecond)
        updatedAt = now
    }
}

/// Requests and tokens per minute an endpoint allows; `nil` is unlimited.
public struct RateLimits: Sendable, Hashable, Codable {
    public var requestsPerMinute: Int?
    public var tokensPerMinute: Int?

    public init(requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
    }
}

/// The request and token buckets of one model endpoint, shared by every run that calls it, and
/// what the server last said about its own limits (``RateLimitStatus``): when it says a window is
/// spent, callers wait for the window to reset instead of collecting 429s.
public final class RateLimiter: Sendable {
    /// `details["source"]` of the errors the limiter raises itself (the server was never asked),
    /// which circuit breakers do not count.
    public static let source = "rateLimiter"

    public let limits: RateLimits
    /// The longest a server may make callers wait (`retry-after`, a window's reset): longer
    /// waits are cut to this (`model.retry.maxRetryAfter`).
    public let maxServerWait: Double
    private let state: Mutex<State>
    private let clock: any Clock<Duration>
    private let seconds: @Sendable () -> Double

    /// A server's window: what is left of it and when it resets, in the limiter's seconds.
    private struct Window {
        var remaining: Double
        var resetsAt: Double

        /// Takes `amount`; returns the seconds to wait for the reset when the window cannot pay.
        mutating func reserve(_ amount: Double, at now: Double) -> Double {
            guard now < resetsAt else { return 0 }
            remaining -= amount
            return remaining < 0 ? resetsAt - now : 0
        }
    }

    private struct State {
        var requests: TokenBucket?
        var tokens: TokenBucket?
        var serverRequests: Window?
        var serverTokens: Window?
    }

    public init(limits: RateLimits, maxServerWait: Double = 60, clock: any Clock<Duration> = ContinuousClock()) {
        self.limits = limits
        self.maxServerWait = maxServerWait.isFinite ? max(0, maxServerWait) : 60
        self.clock = clock
        self.seconds = stopwatch(clock)
        state = Mutex(
            State(
                requests: limits.requestsPerMinute.map { TokenBucket(perMinute: $0, at: 0) },
                tokens: limits.tokensPerMinute.map { TokenBucket(perMinute: $0, at: 0) }
            ))
    }

    private static let registry = Mutex<[String: RateLimiter]>([:])

    /// The limiter of `endpoint` in this process, made on first use with `limits` (later callers
    /// share it, whatever limits they pass).
    public static func shared(for endpoint: String, limits: RateLimits, maxServerWait: Double = 60) -> RateLimiter {
        registry.withLock { registry in
            if let limiter = registry[endpoint] { return limiter }
            let limiter = RateLimiter(limits: limits, maxServerWait: maxServerWait)
            registry[endpoint] = limiter
            return limiter
        }
    }

    /// Waits until one request of about `tokens` tokens may be sent.
    ///
    /// - Parameter deadline: the seconds the call has left, if it has a deadline. A wait that
    ///   would pass it is not begun: the reservation is given back and the call fails at once
    ///   with `rateLimited` (so a fallback model is tried), instead of starting its request with
    ///   no time left. A wait that is cancelled gives its reservation back too.
    public func acquire(tokens: Int, deadline: Double? = nil) async throws {
        let now = seconds()
        let amount = Double(max(0, tokens))
        let wait = state.withLock { state in
            [
                state.requests?.reserve(1, at: now) ?? 0,
                state.tokens?.reserve(amount, at: now) ?? 0,
                state.serverRequests?.reserve(1, at: now) ?? 0,
                state.serverTokens?.reserve(amount, at: now) ?? 0,
            ].max() ?? 0
        }
        guard wait > 0 else { return }
        guard wait.isFinite else {
            giveBack(amount)
            throw TroupeError(
                .rateLimited, "The rate limit allows no requests (a limit of 0 per minute).", details: ["source": Self.source])
        }
        // The request itself needs time too: a wait that leaves less than a quarter of the
        // deadline (at most 5 s) would start a call bound to time out.
        if let deadline, wait > deadline - min(5, max(0, deadline) / 4) {
            giveBack(amount)
            throw TroupeError(
                .rateLimited,
                "The rate limit would hold this call \(Self.format(wait)) s, leaving too little of its deadline "
                    + "(\(Self.format(max(0, deadline))) s left).",
                details: ["waitSeconds": Self.format(wait), "source": Self.source])
        }
        do {
            // At most a day: the limits above keep waits far shorter; this keeps the conversion safe.
            try await clock.sleep(for: .milliseconds(Int64((min(wait, 86_400) * 1000).rounded(.up))))
        } catch {
            giveBack(amount)
            throw error
        }
    }

    /// Returns a reservation that will not be used.
    private func giveBack(_ amount: Double) {
        let now = seconds()
        state.withLock { state in
            state.requests?.adjust(by: 1, at: now)
            state.tokens?.adjust(by: amount, at: now)
            state.serverRequests?.remaining += 1
            state.serverTokens?.remaining += amount
        }
    }

    private static func format(_ seconds: Double) -> String { String(format: "%.1f", seconds) }

    /// A wait a server asked for, in seconds, made safe: `nil` if it is not a number of seconds
    /// from now, and at most ``maxServerWait``. A value that can only be a Unix time (a reset
    /// sent as `1700000000`) is read as one.
    func serverWait(_ seconds: Double?) -> Double? {
        guard var seconds, seconds.isFinite, seconds >= 0 else { return nil }
        if seconds > 1_000_000_000 { seconds = max(0, seconds - Date().timeIntervalSince1970) }
        return min(seconds, maxServerWait)
    }

    /// Corrects the token bucket once the real usage of a call is known.
    public func settle(estimated: Int, actual: Int) {
        let now = seconds()
        state.withLock { $0.tokens?.adjust(by: Double(estimated - actual), at: now) }
    }

    /// Takes in what the server said about its limits with an answer: the remaining requests and
    /// tokens of its current windows hold until the windows reset.
    public func observe(_ status: RateLimitStatus) {
        let now = seconds()
        state.withLock { state in
            // A negative count is a server's bug, not a spent window.
            if let remaining = status.remainingRequests, remaining >= 0, let reset = serverWait(status.requestsResetSeconds) {
                state.serverRequests = Window(remaining: Double(remaining), resetsAt: now + reset)
            }
            if let remaining = status.remainingTokens, remaining >= 0, let reset = serverWait(status.tokensResetSeconds) {
                state.serverTokens = Window(remaining: Double(remaining), resetsAt: now + reset)
            }
        }
    }

    /// Holds every caller for `seconds` (a 429's `retry-after`, at most ``maxServerWait``): no
    /// request is sent before then.
    public func hold(for seconds: Double) {
        guard let seconds = serverWait(seconds) else { return }
        let now = self.seconds()
        state.withLock { state in
            let until = max(state.serverRequests.map { $0.remaining <= 0 ? $0.resetsAt : now } ?? now, now + seconds)
            state.serverRequests = Window(remaining: 0, resetsAt: until)
        }
    }
}

/// Keeps a model's calls within requests-per-minute and tokens-per-minute limits, so runs slow
/// down before the server answers 429. Tokens are estimated before a call (prompt characters ÷ 4
/// plus the answer allowance) and corrected with the real usage after it. The server's
/// `x-ratelimit-*` headers are heeded too (a spent window holds callers until it resets), and a
/// 429 with `retry-after` holds every caller of the endpoint, not only the one that got it.
public struct RateLimitedModel: ChatModel {
    public let base: any ChatModel
    public let limiter: RateLimiter

    public init(_ base: any ChatModel, limiter: RateLimiter) {
        self.base = base
        self.limiter = limiter
    }

    /// Tokens a request may use: its text ÷ 4 (a common rule of thumb for English and code) plus
    /// `maxTokens`, or 512 for the answer when no limit is set.
    public static func estimatedTokens(_ request: ChatRequest) -> Int {
        var characters = 0
        for message in request.messages {
            characters += (message.content?.count ?? 0) + message.toolCalls.reduce(0) { $0 + $1.arguments.count + $1.name.count }
        }
        for tool in request.tools {
            characters += tool.name.count + tool.description.count + tool.parameters.jsonValue.jsonString.count
        }
        let (estimate, overflow) = (characters / 4).addingReportingOverflow(max(0, request.maxTokens ?? 512))
        return overflow ? .max : estimate
    }

    /// What is left of the call's deadline (``ModelCallDeadline``), in seconds, if it has one.
    private static var remainingDeadline: Double? {
        ModelCallDeadline.current.map { ContinuousClock.now.duration(to: $0).seconds }
    }

    public func complete(_ request: ChatRequest) async throws -> ChatResponse {
        let estimate = Self.estimatedTokens(request)
        try await limiter.acquire(tokens: estimate, deadline: Self.remainingDeadline)
        do {
            let response = try await base.complete(request)
            settle(response, estimate: estimate)
            return response
        } catch {
            held(by: error)
            throw error
        }
    }

    public func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
        .producing { continuation in
            let estimate = Self.estimatedTokens(request)
            try await limiter.acquire(tokens: estimate, deadline: Self.remainingDeadline)
            do {
                for try await event in base.stream(request) {
                    if case .completed(let response) = event { settle(response, estimate: estimate) }
                    continuation.yield(event)
                }
            } catch {
                held(by: error)
                throw error
            }
        }
    }

    /// The real usage corrects the estimate; the server's word on its limits is taken in.
    private func settle(_ response: ChatResponse, estimate: Int) {
        // A server that sends no usage keeps the estimate (refunding it would switch the tokens
        // limit off for every server that does not report usage).
        if response.usage.inputTokens + response.usage.outputTokens > 0 {
            limiter.settle(estimated: estimate, actual: response.usage.inputTokens + response.usage.outputTokens)
        }
        if let status = response.rateLimit { limiter.observe(status) }
    }

    /// A 429 that says how long to wait holds every caller of the endpoint that long. A failed
    /// call keeps its estimate: the server may have counted the prompt.
    private func held(by error: any Error) {
        guard let error = error as? TroupeError, error.code == .rateLimited, let wait = error.retryAfterSeconds(now: Date()) else { return }
        limiter.hold(for: wait)
    }
}
