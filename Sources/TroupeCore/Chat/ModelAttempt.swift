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

    /// Told about the failed attempts of the model calls made in this task (and its child tasks):
    /// the run driver sets it around a model call to journal each retry with the call.
    @TaskLocal public static var observer: (@Sendable (ModelAttempt) -> Void)?
}
