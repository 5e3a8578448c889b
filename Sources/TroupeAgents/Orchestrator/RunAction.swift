public import TroupeCore

/// What the orchestrator wants done next. The driver performs it and journals the outcome.
public enum RunAction: Sendable, Hashable {
    /// A decision that needs no I/O: append the event as it is.
    case record(RunEvent)
    /// Ask the model: to plan (`step` is `nil`) or to take a step's next turn.
    case callModel(key: ActivityKey, purpose: ModelCallPurpose, stepID: String?)
    /// Run a tool call the model requested in a step.
    case callTool(key: ActivityKey, stepID: String, call: ToolCall)

    /// The activity this action performs, if it is one.
    public var activityKey: ActivityKey? {
        switch self {
        case .record: nil
        case .callModel(let key, _, _), .callTool(let key, _, _): key
        }
    }
}
