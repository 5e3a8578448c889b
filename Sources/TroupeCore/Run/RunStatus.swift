/// Where a run is in its life. The raw values are a public contract (`--json`, the API).
public enum RunStatus: String, Sendable, Hashable, Codable, CaseIterable {
    case pending, running, waitingForApproval, needsAttention, succeeded, failed, cancelled

    /// `true` once the run can no longer change by itself.
    public var isTerminal: Bool {
        switch self {
        case .succeeded, .failed, .cancelled: true
        case .pending, .running, .waitingForApproval, .needsAttention: false
        }
    }
}
