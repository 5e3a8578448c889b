import Foundation

/// What an activity is: a model call (by the planner or an executor) or a tool call.
public enum ActivityKind: Sendable, Hashable, Codable {
    case model(purpose: ModelCallPurpose)
    case tool(name: String, callID: String, effect: ToolEffect)

    /// Whether this is one of the planner's model calls. Told by the kind, never by the key's
    /// step name, which is only a name.
    public var isPlannerCall: Bool {
        if case .model(let purpose) = self { return purpose == .plan || purpose == .replan }
        return false
    }
}

/// Why a model is called.
public enum ModelCallPurpose: String, Sendable, Hashable, Codable {
    /// Produce the first plan, or repair a rejected one.
    case plan
    /// Produce a new plan after a failed step.
    case replan
    /// One turn of a step's tool loop.
    case execute
    /// The last turn of a step that ran out of iterations: answer without tools.
    case finalAnswer
}

/// The recorded result of an activity.
public enum ActivityResult: Sendable, Hashable, Codable {
    case model(ChatResponse)
    case tool(ToolOutput)
}

/// How an operator settled an activity that was in flight when its process died.
public enum AttentionResolution: String, Sendable, Hashable, Codable {
    /// Run the activity again (the operator checked it did not take effect, or accepts a repeat).
    case retry
    /// Do not run it again; the model is told the outcome is unknown.
    case skip
}

/// One fact in a run's append-only journal. The run's state is the fold of these events.
///
/// The JSON form is `{"type": "<case>", …fields}`; new cases and fields may be added, old ones never change meaning.
public enum RunEvent: Sendable, Hashable {
    case runCreated(goal: String, configuration: RunConfiguration)
    /// A driver (a CLI process, a worker) took the run; activities started before it and never finished are orphans.
    case leaseAcquired(owner: String)
    /// `resume` was given overrides: the run continues with this configuration.
    case configurationUpdated(configuration: RunConfiguration)
    case activityStarted(key: ActivityKey, kind: ActivityKind)
    case activityCompleted(key: ActivityKey, result: ActivityResult)
    case activityFailed(key: ActivityKey, error: TroupeError)
    /// A model call's attempt failed and was retried after `retryDelaySeconds` (recorded with
    /// the call's outcome, so `show` can explain a slow call).
    case modelCallRetried(key: ActivityKey, attempt: Int, error: TroupeError, retryDelaySeconds: Double)
    case planProposed(round: Int, plan: Plan)
    case planRejected(round: Int, attempt: Int, problems: [String])
    case stepStarted(stepID: String, attempt: Int)
    case stepCompleted(stepID: String, output: String)
    case stepFailed(stepID: String, error: TroupeError)
    case replanned(round: Int, plan: Plan, reason: String)
    case runNeedsAttention(key: ActivityKey, reason: String)
    /// A tool call that needs a person's decision (``ToolPolicy/requireApproval``) was asked for:
    /// it does not run until `approvalDecided`; the run waits (`waitingForApproval`) once nothing else is left to do.
    case approvalRequested(key: ActivityKey, request: ApprovalRequest)
    /// A person (or the request's timeout) decided on the call: it then runs (approved, or with
    /// edited arguments) or gets the denial as its result.
    case approvalDecided(key: ActivityKey, decision: ApprovalDecision)
    case attentionResolved(key: ActivityKey, resolution: AttentionResolution)
    case runCancelled(reason: String)
    case runSucceeded(answer: String)
    case runFailed(error: TroupeError)

    /// The case name, as stored in the journal's `type` column.
    public var type: String {
        switch self {
        case .runCreated: "runCreated"
        case .leaseAcquired: "leaseAcquired"
        case .configurationUpdated: "configurationUpdated"
        case .activityStarted: "activityStarted"
        case .activityCompleted: "activityCompleted"
        case .activityFailed: "activityFailed"
        case .modelCallRetried: "modelCallRetried"
        case .planProposed: "planProposed"
        case .planRejected: "planRejected"
        case .stepStarted: "stepStarted"
        case .stepCompleted: "stepCompleted"
        case .stepFailed: "stepFailed"
        case .replanned: "replanned"
        case .runNeedsAttention: "runNeedsAttention"
        case .approvalRequested: "approvalRequested"
        case .approvalDecided: "approvalDecided"
        case .attentionResolved: "attentionResolved"
        case .runCancelled: "runCancelled"
        case .runSucceeded: "runSucceeded"
        case .runFailed: "runFailed"
        }
    }

    /// The status this event moves the run to, if it changes it. (`leaseAcquired` also moves a
    /// `pending` run to `running`; approvals move it in and out of `waitingForApproval` by the
    /// count of undecided requests, see ``RunSummary/applying(_:at:)``.)
    public var resultingStatus: RunStatus? {
        switch self {
        case .runCreated: .pending
        case .runNeedsAttention: .needsAttention
        case .runCancelled: .cancelled
        case .runSucceeded: .succeeded
        case .runFailed: .failed
        default: nil
        }
    }
}

extension RunEvent: Codable {
    private enum CodingKeys: String, CodingKey {
        case type, goal, configuration, owner, key, kind, result, error, round, plan, attempt, problems
        case stepID, output, reason, resolution, answer, retryDelaySeconds, request, decision
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decode(String.self, forKey: .type)
        switch type {
        case "runCreated":
            self = .runCreated(
                goal: try c.decode(String.self, forKey: .goal), configuration: try c.decode(RunConfiguration.self, forKey: .configuration))
        case "leaseAcquired":
            self = .leaseAcquired(owner: try c.decode(String.self, forKey: .owner))
        case "configurationUpdated":
            self = .configurationUpdated(configuration: try c.decode(RunConfiguration.self, forKey: .configuration))
        case "activityStarted":
            self = .activityStarted(key: try c.decode(ActivityKey.self, forKey: .key), kind: try c.decode(ActivityKind.self, forKey: .kind))
        case "activityCompleted":
            self = .activityCompleted(
                key: try c.decode(ActivityKey.self, forKey: .key), result: try c.decode(ActivityResult.self, forKey: .result))
        case "activityFailed":
            self = .activityFailed(key: try c.decode(ActivityKey.self, forKey: .key), error: try c.decode(TroupeError.self, forKey: .error))
        case "modelCallRetried":
            self = .modelCallRetried(
                key: try c.decode(ActivityKey.self, forKey: .key),
                attempt: try c.decode(Int.self, forKey: .attempt),
                error: try c.decode(TroupeError.self, forKey: .error),
                retryDelaySeconds: try c.decode(Double.self, forKey: .retryDelaySeconds)
            )
        case "planProposed":
            self = .planProposed(round: try c.decode(Int.self, forKey: .round), plan: try c.decode(Plan.self, forKey: .plan))
        case "planRejected":
            self = .planRejected(
                round: try c.decode(Int.self, forKey: .round),
                attempt: try c.decode(Int.self, forKey: .attempt),
                problems: try c.decode([String].self, forKey: .problems)
            )
        case "stepStarted":
            self = .stepStarted(stepID: try c.decode(String.self, forKey: .stepID), attempt: try c.decode(Int.self, forKey: .attempt))
        case "stepCompleted":
            self = .stepCompleted(stepID: try c.decode(String.self, forKey: .stepID), output: try c.decode(String.self, forKey: .output))
        case "stepFailed":
            self = .stepFailed(stepID: try c.decode(String.self, forKey: .stepID), error: try c.decode(TroupeError.self, forKey: .error))
        case "replanned":
            self = .replanned(
                round: try c.decode(Int.self, forKey: .round),
                plan: try c.decode(Plan.self, forKey: .plan),
                reason: try c.decode(String.self, forKey: .reason)
            )
        case "runNeedsAttention":
            self = .runNeedsAttention(key: try c.decode(ActivityKey.self, forKey: .key), reason: try c.decode(String.self, forKey: .reason))
        case "approvalRequested":
            self = .approvalRequested(
                key: try c.decode(ActivityKey.self, forKey: .key), request: try c.decode(ApprovalRequest.self, forKey: .request))
        case "approvalDecided":
            self = .approvalDecided(
                key: try c.decode(ActivityKey.self, forKey: .key), decision: try c.decode(ApprovalDecision.self, forKey: .decision))
        case "attentionResolved":
            self = .attentionResolved(
                key: try c.decode(ActivityKey.self, forKey: .key),
                resolution: try c.decode(AttentionResolution.self, forKey: .resolution)
            )
        case "runCancelled":
            self = .runCancelled(reason: try c.decode(String.self, forKey: .reason))
        case "runSucceeded":
            self = .runSucceeded(answer: try c.decode(String.self, forKey: .answer))
        case "runFailed":
            self = .runFailed(error: try c.decode(TroupeError.self, forKey: .error))
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .type,
                in: c,
                debugDescription: "Unknown event type '\(type)': the journal was written by a newer Troupe."
            )
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        switch self {
        case .runCreated(let goal, let configuration):
            try c.encode(goal, forKey: .goal)
            try c.encode(configuration, forKey: .configuration)
        case .leaseAcquired(let owner):
            try c.encode(owner, forKey: .owner)
        case .configurationUpdated(let configuration):
            try c.encode(configuration, forKey: .configuration)
        case .activityStarted(let key, let kind):
            try c.encode(key, forKey: .key)
            try c.encode(kind, forKey: .kind)
        case .activityCompleted(let key, let result):
            try c.encode(key, forKey: .key)
            try c.encode(result, forKey: .result)
        case .activityFailed(let key, let error):
            try c.encode(key, forKey: .key)
            try c.encode(error, forKey: .error)
        case .modelCallRetried(let key, let attempt, let error, let delay):
            try c.encode(key, forKey: .key)
            try c.encode(attempt, forKey: .attempt)
            try c.encode(error, forKey: .error)
            try c.encode(delay, forKey: .retryDelaySeconds)
        case .planProposed(let round, let plan):
            try c.encode(round, forKey: .round)
            try c.encode(plan, forKey: .plan)
        case .planRejected(let round, let attempt, let problems):
            try c.encode(round, forKey: .round)
            try c.encode(attempt, forKey: .attempt)
            try c.encode(problems, forKey: .problems)
        case .stepStarted(let stepID, let attempt):
            try c.encode(stepID, forKey: .stepID)
            try c.encode(attempt, forKey: .attempt)
        case .stepCompleted(let stepID, let output):
            try c.encode(stepID, forKey: .stepID)
            try c.encode(output, forKey: .output)
        case .stepFailed(let stepID, let error):
            try c.encode(stepID, forKey: .stepID)
            try c.encode(error, forKey: .error)
        case .replanned(let round, let plan, let reason):
            try c.encode(round, forKey: .round)
            try c.encode(plan, forKey: .plan)
            try c.encode(reason, forKey: .reason)
        case .runNeedsAttention(let key, let reason):
            try c.encode(key, forKey: .key)
            try c.encode(reason, forKey: .reason)
        case .approvalRequested(let key, let request):
            try c.encode(key, forKey: .key)
            try c.encode(request, forKey: .request)
        case .approvalDecided(let key, let decision):
            try c.encode(key, forKey: .key)
            try c.encode(decision, forKey: .decision)
        case .attentionResolved(let key, let resolution):
            try c.encode(key, forKey: .key)
            try c.encode(resolution, forKey: .resolution)
        case .runCancelled(let reason):
            try c.encode(reason, forKey: .reason)
        case .runSucceeded(let answer):
            try c.encode(answer, forKey: .answer)
        case .runFailed(let error):
            try c.encode(error, forKey: .error)
        }
    }
}

/// An event as stored: its position in the journal and when it was recorded.
public struct RunEventRecord: Sendable, Hashable, Codable {
    /// The version of the event encoding this record was written with.
    public static let currentSchemaVersion = 1

    /// 1-based, gap-free position in the run's journal.
    public var sequence: Int
    public var recordedAt: Date
    public var schemaVersion: Int
    public var event: RunEvent

    public init(sequence: Int, recordedAt: Date, event: RunEvent, schemaVersion: Int = RunEventRecord.currentSchemaVersion) {
        self.sequence = sequence
        self.recordedAt = recordedAt
        self.schemaVersion = schemaVersion
        self.event = event
    }
}
