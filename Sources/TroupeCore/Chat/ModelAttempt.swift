import Foundation

/// One failed attempt of a model call, as a retrying model reports it.
public struct ModelAttempt: Sendable, Hashable {
    /// 1 for the first attempt.
    public var number: Int
    public var error: TroupeError
    /// How long the caller waits before the next attempt; `nil` when it gives up.
    public var retryDelaySeconds: Double?

    public init(number: Int, error: TroupeError, retryDelaySeconds: Double?) {
        self.number = number
        self.error = error
        self.retryDelaySeconds = retryDelaySeconds
    }

    /// The model the call moved on to after this failure, when a fallback chain did
    /// (`details["fallbackTo"]` of the error).
    public var fallbackTo: String? { error.details["fallbackTo"] }

    /// One line for people: `attempt 2: rateLimited: …; retried after 0.5 s`, or for a fallback
    /// `transport: …; fell back to gpt-4o-mini@https://…`. `limit` clips the error's message.
    public func summary(messageLimit limit: Int = .max) -> String {
        let message = error.message.split(whereSeparator: \.isNewline).joined(separator: " ").clipped(to: limit)
        if let fallbackTo { return "\(error.code.rawValue): \(message)\(Self.fellBackMarker)\(fallbackTo)" }
        let delay = String(format: "%.1f", retryDelaySeconds ?? 0)
        return "attempt \(number): \(error.code.rawValue): \(message); retried after \(delay) s"
    }

    /// What a ``summary(messageLimit:)`` of a fallback has before the model it fell back to.
    public static let fellBackMarker = "; fell back to "

    /// Told about the failed attempts of the model calls made in this task (and its child tasks):
    /// the run driver sets it around a model call to journal each retry with the call.
    @TaskLocal public static var observer: ModelAttemptObserver?
}

/// Receives failed model-call attempts (``ModelAttempt/observer``).
///
/// A struct rather than a bare closure: a task-local whose value is a closure type crashes at
/// runtime in optimized builds with Swift 6.3 (swiftlang/swift#88321 — the type metadata for the
/// closure cannot be demangled), and a nominal type avoids that.
public struct ModelAttemptObserver: Sendable {
    public let report: @Sendable (ModelAttempt) -> Void

    public init(_ report: @escaping @Sendable (ModelAttempt) -> Void) {
        self.report = report
    }
}

/// The time a caller gives the model calls made below it.
public enum ModelCallDeadline {
    /// The latest a model call made in this task (and its child tasks) may end. A retrying model
    /// sets it to what remains of the call's deadline for each attempt, so a hung attempt cannot
    /// outlive the call; model clients that do I/O (``ChatModel``s such as the OpenAI client) stop
    /// at it with a `timeout` error.
    @TaskLocal public static var current: ContinuousClock.Instant?

    /// Runs `body` with the deadline `limit` from now, or the current one if that is sooner.
    public static func within<T>(
        _ limit: Duration,
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> T
    ) async rethrows -> T {
        try await $current.withValue(sooner(limit), operation: body)
    }

    /// Calls `body` with the deadline `limit` from now, or the current one if that is sooner;
    /// tasks it starts (such as a stream's producer) inherit it.
    public static func within<T>(_ limit: Duration, _ body: () throws -> T) rethrows -> T {
        try $current.withValue(sooner(limit), operation: body)
    }

    private static func sooner(_ limit: Duration) -> ContinuousClock.Instant {
        let proposed = ContinuousClock.now.advanced(by: limit)
        return current.map { min($0, proposed) } ?? proposed
    }
}
