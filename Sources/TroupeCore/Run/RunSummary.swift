import Foundation

/// The facts about a run that list views need without folding its journal: kept by every store,
/// updated from each appended batch by ``applying(_:)``.
public struct RunSummary: Sendable, Hashable, Codable {
    public var id: RunID
    public var goal: String
    public var status: RunStatus
    public var createdAt: Date
    public var updatedAt: Date
    public var configuration: RunConfiguration
    public var usage: Usage
    public var modelCalls: Int
    public var toolCalls: Int
    /// The final answer of a succeeded run.
    public var answer: String?
    /// Why the run failed or needs attention.
    public var error: TroupeError?
    /// The sequence number of the journal's last event.
    public var lastSequence: Int
    /// Tool calls asked for and not yet decided on by a person (`approvalRequested` without its
    /// `approvalDecided`): while there are any, the run is `waitingForApproval` and no worker claims it.
    public var pendingApprovals: Int

    public init(id: RunID, goal: String, configuration: RunConfiguration, createdAt: Date) {
        self.id = id
        self.goal = goal
        self.status = .pending
        self.createdAt = createdAt
        self.updatedAt = createdAt
        self.configuration = configuration
        self.usage = .zero
        self.modelCalls = 0
        self.toolCalls = 0
        self.lastSequence = 0
        self.pendingApprovals = 0
    }

    /// The summary after `events` were appended at `time`.
    public func applying(_ events: [RunEvent], at time: Date) -> RunSummary {
        var next = self
        for event in events {
            next.lastSequence += 1
            if let status = event.resultingStatus { next.status = status }
            switch event {
            case .activityCompleted(_, .model(let response)):
                next.usage += response.usage
                next.modelCalls += 1
            case .activityCompleted(_, .tool):
                next.toolCalls += 1
            case .leaseAcquired where next.status == .pending:
                next.status = .running
            case .configurationUpdated(let configuration):
                next.configuration = configuration
            case .runSucceeded(let answer):
                next.answer = answer
                next.error = nil
            case .runFailed(let error):
                next.error = error
            case .runNeedsAttention(_, let reason):
                next.error = TroupeError(.invalidTransition, reason)
            case .runCancelled(let reason):
                next.error = TroupeError(.cancelled, reason)
            case .attentionResolved:
                next.status = next.pendingApprovals > 0 ? .waitingForApproval : .running
                next.error = nil
            case .approvalRequested:
                next.pendingApprovals += 1
                if next.status == .pending || next.status == .running { next.status = .waitingForApproval }
            case .approvalDecided:
                next.pendingApprovals = max(0, next.pendingApprovals - 1)
                if next.pendingApprovals == 0, next.status == .waitingForApproval { next.status = .running }
            default:
                break
            }
        }
        next.updatedAt = time
        return next
    }
}
