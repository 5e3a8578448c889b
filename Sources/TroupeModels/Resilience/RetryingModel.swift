public import Foundation
public import TroupeCore

/// How a ``RetryingModel`` retries a failed model call.
///
/// The defaults retry twice (three attempts) and give up on a call after three minutes in all, so a
/// failing or hung server fails a run in bounded time without any configuration.
public struct RetryPolicy: Sendable, Hashable, Codable {
    /// Attempts per call, the first included (≥ 1).
    public var maxAttempts: Int
    /// The first backoff's upper bound; each retry doubles it, up to `maxBackoffSeconds`.
    public var initialBackoffSeconds: Double
    public var maxBackoffSeconds: Double
    /// The longest wait a server's `retry-after`/`retry-after-ms` is honoured for.
    public var maxRetryAfterSeconds: Double
    /// The whole call, all attempts and waits, may take this long; a wait that would end past it
    /// is not started.
    public var deadlineSeconds: Double

    public init(
        maxAttempts: Int = 3,
        initialBackoffSeconds: Double = 0.5,
        maxBackoffSeconds: Double = 20,
        maxRetryAfterSeconds: Double = 60,
        deadlineSeconds: Double = 180
    ) {
        self.maxAttempts = maxAttempts
        self.initialBackoffSeconds = initialBackoffSeconds
        self.maxBackoffSeconds = maxBackoffSeconds
        self.maxRetryAfterSeconds = maxRetryAfterSeconds
        self.deadlineSeconds = deadlineSeconds
    }

    /// The policy if it is usable, else an `invalidInput` error naming the field.
    public func validated() throws(TroupeError) -> RetryPolicy {
        func require(_ ok: Bool, _ field: String, _ rule: String) throws(TroupeError) {
            guard ok else { throw TroupeError(.invalidInput, "The retry policy's \(field) must be \(rule).") }
        }
        try require(maxAttempts >= 1, "maxAttempts", "at least 1")
        try require(initialBackoffSeconds >= 0 && initialBackoffSeconds.isFinite, "initialBackoffSeconds", "zero or more")
        try require(
            maxBackoffSeconds >= initialBackoffSeconds && maxBackoffSeconds.isFinite, "maxBackoffSeconds", "at least the initial backoff")
        try require(maxRetryAfterSeconds >= 0 && maxRetryAfterSeconds.isFinite, "maxRetryAfterSeconds", "zero or more")
        try require(deadlineSeconds > 0 && deadlineSeconds.isFinite, "deadlineSeconds", "more than zero")
        return self
    }
}

extension TroupeError {
    /// Whether the same call may succeed if tried again: rate limits (429), timeouts (408),
    /// conflicts (409), server errors (5xx), errors in a stream and transport failures — never a
    /// request the server refused (400, 401, 403, 404, 422) or an answer it filtered.
    public var isRetryable: Bool {
        switch code {
        case .rateLimited, .transport, .timeout:
            return true
        case .modelAPI:
            guard let status = details["status"].flatMap({ Int($0) }) else { return true }
            return status == 408 || status == 409 || status >= 500
        default:
            return false
        }
    }

    /// The wait the server asked for (`retry-after-ms`, or `retry-after` in seconds or as an
    /// HTTP date), in seconds from `now`; `nil` if it asked for none or said something unreadable.
    public func retryAfterSeconds(now: Date) -> Double? {
        guard let text = details["retryAfter"]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        // Bounded here too (a year): a value such as 1e19 must not trap where it becomes a Duration.
        if text.hasSuffix("ms"), let milliseconds = Double(text.dropLast(2)), milliseconds.isFinite {
            return min(max(0, milliseconds / 1000), 31_536_000)
        }
        if let seconds = Double(text), seconds.isFinite { return min(max(0, seconds), 31_536_000) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: text) else { return nil }
        return max(0, date.timeIntervalSince(now))
    }
}

/// Retries a model's failed calls that may succeed on another try, with exponential backoff and
/// full jitter, honouring the server's `retry-after`, within a maximum number of attempts and a
/// deadline for the whole call. Refused requests (400, 401, 403, 404, 422) are never retried.
///
/// A stream that fails before any content arrived is retried like a call; one that fails after
/// content was delivered is not restarted (the caller has already seen part of an answer): its
/// error surfaces with `details["deliveredEvents"]`.
///
/// The final error is the last attempt's, with `details["attempts"]` and the reason it gave up.
///
/// Each attempt runs under ``ModelCallDeadline`` set to what remains of the call's deadline, so
/// a model client that honours it (``OpenAIChatModel`` does) cuts an attempt that would outlive
/// the call.
public struct RetryingModel: ChatModel {
    public let base: any ChatModel
    public let policy: RetryPolicy
    private let clock: any Clock<Duration>
    private let now: @Sendable () -> Date
    private let jitter: @Sendable (ClosedRange<Double>) -> Double
    private let onAttempt: @Sendable (ModelAttempt) -> Void

    /// - Parameters:
    ///   - clock: what waits are slept on (a test clock in tests).
    ///   - now: wall-clock time, for `retry-after` given as an HTTP date.
    ///   - jitter: picks a wait in the given range (full jitter); tests pass a fixed choice.
    ///   - onAttempt: told about every failed attempt, the last one included.
    public init(
        _ base: any ChatModel,
        policy: RetryPolicy = RetryPolicy(),
        clock: any Clock<Duration> = ContinuousClock(),
        now: @escaping @Sendable () -> Date = { Date() },
        jitter: @escaping @Sendable (ClosedRange<Double>) -> Double = { Double.random(in: $0) },
        onAttempt: @escaping @Sendable (ModelAttempt) -> Void = { _ in }
    ) throws(TroupeError) {
        self.base = base
        self.policy = try policy.validated()
        self.clock = clock
        self.now = now
        self.jitter = jitter
        self.onAttempt = onAttempt
    }

    public func complete(_ request: ChatRequest) async throws -> ChatResponse {
        var attempts = Attempts(wrapper: self)
        while true {
            do {
                return try await ModelCallDeadline.within(attempts.remaining) { try await base.complete(request) }
            } catch {
                try await attempts.failed(error)
            }
        }
    }

    public func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
        .producing { continuation in
            var attempts = Attempts(wrapper: self)
            while true {
                var delivered = 0
                do {
                    let events = ModelCallDeadline.within(attempts.remaining) { base.stream(request) }
                    for try await event in events {
                        if case .completed = event {} else { delivered += 1 }
                        continuation.yield(event)
                    }
                    return
                } catch {
                    guard delivered == 0 else {
                        var failure = TroupeError.wrap(error, as: .modelAPI)
                        failure.details["deliveredEvents"] = String(delivered)
                        failure.message += " The stream broke after part of the answer was delivered, so it was not retried."
                        attempts.report(failure, retryDelay: nil)
                        throw failure
                    }
                    try await attempts.failed(error)
                }
            }
        }
    }

    /// The attempts of one call: decides whether and how long to wait after a failure.
    private struct Attempts {
        let wrapper: RetryingModel
        /// Seconds since the call began, on the wrapper's clock.
        let elapsed: @Sendable () -> Double
        var number = 1

        init(wrapper: RetryingModel) {
            self.wrapper = wrapper
            self.elapsed = stopwatch(wrapper.clock)
        }

        /// What is left of the call's deadline: the most the next attempt may take.
        var remaining: Duration { .seconds(max(0, wrapper.policy.deadlineSeconds - elapsed())) }

        func report(_ error: TroupeError, retryDelay: Double?) {
            let attempt = ModelAttempt(number: number, error: error, retryDelaySeconds: retryDelay)
            wrapper.onAttempt(attempt)
            ModelAttempt.observer?.report(attempt)
        }

        /// Waits before the next attempt, or throws the error to give up with.
        mutating func failed(_ error: any Error) async throws {
            var failure = TroupeError.wrap(error, as: .modelAPI)
            if error is CancellationError || failure.code == .cancelled || Task.isCancelled {
                throw TroupeError(.cancelled, "The model call was cancelled.")
            }
            let policy = wrapper.policy
            let elapsed = self.elapsed()
            // Why it gives up, when it does for a retryable failure; a refused request needs none.
            let reason: String?
            if !failure.isRetryable {
                reason = nil
            } else if number >= policy.maxAttempts {
                reason = "gave up after \(attemptsText)"
            } else {
                let delay = nextDelay(after: failure)
                guard elapsed + delay > policy.deadlineSeconds else {
                    report(failure, retryDelay: delay)
                    try await wrapper.clock.sleep(for: .milliseconds(Int64((delay * 1000).rounded())))
                    number += 1
                    return
                }
                reason =
                    "gave up after \(attemptsText): waiting \(format(delay)) s more would pass the call's deadline of \(format(policy.deadlineSeconds)) s"
            }
            if number > 1 || reason != nil {
                failure.details["attempts"] = String(number)
                if let reason { failure.message += " (\(reason) in \(format(elapsed)) s)" }
            }
            report(failure, retryDelay: nil)
            throw failure
        }

        /// The wait the server asked for (capped), or a backoff with full jitter.
        private func nextDelay(after failure: TroupeError) -> Double {
            let policy = wrapper.policy
            if let asked = failure.retryAfterSeconds(now: wrapper.now()) {
                return min(asked, policy.maxRetryAfterSeconds)
            }
            let ceiling = min(policy.maxBackoffSeconds, policy.initialBackoffSeconds * pow(2, Double(number - 1)))
            return min(max(0, wrapper.jitter(0...ceiling)), ceiling)
        }

        private var attemptsText: String { number == 1 ? "1 attempt" : "\(number) attempts" }

        private func format(_ seconds: Double) -> String {
            String(format: "%.1f", seconds)
        }
    }
}
