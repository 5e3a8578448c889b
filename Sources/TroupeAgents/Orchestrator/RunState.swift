public import Foundation
public import TroupeCore

/// Where a step of the plan is.
public enum StepStatus: String, Sendable, Hashable, Codable {
    case pending, running, succeeded, failed
    /// Replaced by a replan before it finished.
    case superseded
}

/// One turn of a step's conversation with the model, as recorded in the journal.
public enum TranscriptItem: Sendable, Hashable {
    case assistant(key: ActivityKey, response: ChatResponse)
    case toolResult(key: ActivityKey, call: ToolCall, output: ToolOutput)
}

/// The state of one step, folded from the journal.
public struct StepState: Sendable, Hashable {
    public var step: PlanStep
    public var status: StepStatus = .pending
    /// Starts at 0 before the step has run; each `stepStarted` increments it.
    public var attempt: Int = 0
    /// The current attempt's turns.
    public var transcript: [TranscriptItem] = []
    public var output: String?
    public var error: TroupeError?
    public var startedAt: Date?
    public var finishedAt: Date?
    /// Failed model calls in the current attempt.
    public var modelFailures: Int = 0
    /// The call index the next activity of this attempt gets.
    public var nextCallIndex: Int = 0
    /// Model calls made in the current attempt.
    public var iterations: Int = 0
    /// A non-retryable failure that ends the attempt at the next decision.
    var fatalError: TroupeError?

    public init(step: PlanStep) { self.step = step }
}

/// What is known about one activity.
public struct ActivityRecord: Sendable, Hashable {
    /// `started` until the activity completes (with a result) or fails (with an error).
    public enum Status: String, Sendable, Hashable { case started, completed, failed }

    public var key: ActivityKey
    public var kind: ActivityKind
    public var status: Status
    public var result: ActivityResult?
    public var error: TroupeError?
    public var startedAt: Date
    public var finishedAt: Date?
    /// Failed attempts a retrying model made before this call's outcome, oldest first.
    public var retries: [ModelAttempt] = []
}

/// The planner's conversation for the current round: each answer and, if rejected, why.
public struct PlannerTurn: Sendable, Hashable {
    public var response: ChatResponse
    public var problems: [String]?
}
