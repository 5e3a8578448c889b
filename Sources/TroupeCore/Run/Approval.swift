public import Foundation

/// What a person (or a timeout's default) decided about a tool call that needed approval.
public enum ApprovalVerdict: String, Sendable, Hashable, Codable, CaseIterable {
    /// Run the call as the model asked.
    case approve
    /// Run the call with other arguments (``ApprovalDecision/arguments``).
    case edit
    /// Do not run it; the model reads the reason as the call's result.
    case deny
}

/// A tool call that waits for a person's decision, as journaled in `approvalRequested`.
public struct ApprovalRequest: Sendable, Hashable, Codable {
    /// The call exactly as the model asked for it.
    public var call: ToolCall
    /// The tool's effect (what the call would be recorded as once it runs).
    public var effect: ToolEffect
    /// The tool's parameters when the call was asked for: what edited arguments must satisfy.
    public var parameters: JSONSchema?
    /// When the request's default applies if no one decides; `nil`: it waits for ever.
    public var expiresAt: Date?
    /// The decision taken at ``expiresAt`` (`approve` or `deny`).
    public var onTimeout: ApprovalVerdict?

    public init(
        call: ToolCall, effect: ToolEffect, parameters: JSONSchema? = nil, expiresAt: Date? = nil, onTimeout: ApprovalVerdict? = nil
    ) {
        self.call = call
        self.effect = effect
        self.parameters = parameters
        self.expiresAt = expiresAt
        self.onTimeout = onTimeout
    }
}

extension ApprovalRequest {
    /// `decision` as it is journaled, whoever made it: arguments only for an edit (checked with
    /// ``checkedArguments(_:)``), a reason only for a denial (trimmed, at most 2000 characters).
    public func normalized(_ decision: ApprovalDecision) throws(TroupeError) -> ApprovalDecision {
        var decision = decision
        decision.arguments = decision.verdict == .edit ? try checkedArguments(decision.arguments) : nil
        let reason = decision.reason?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        decision.reason = decision.verdict == .deny && !reason.isEmpty ? String(reason.prefix(2_000)) : nil
        return decision
    }

    /// Edited arguments as compact JSON, once checked: a JSON object of at most 1 MiB that
    /// satisfies the tool's parameters (as journaled with the request).
    public func checkedArguments(_ text: String?) throws(TroupeError) -> String {
        guard let text, !text.isEmpty else { throw TroupeError(.invalidInput, "An edit needs the new arguments (a JSON object).") }
        guard text.utf8.count <= 1 << 20 else { throw TroupeError(.invalidInput, "The edited arguments are larger than 1 MiB.") }
        let value: JSONValue
        do {
            value = try JSONValue.parse(text)
        } catch {
            throw TroupeError(.invalidInput, "The edited arguments are not valid JSON: \(error.message)")
        }
        guard case .object = value else { throw TroupeError(.invalidInput, "The edited arguments must be a JSON object.") }
        if let parameters {
            let violations = parameters.validate(value)
            guard violations.isEmpty else {
                throw TroupeError(
                    .invalidInput,
                    "The edited arguments do not match the schema of \(call.name): "
                        + violations.prefix(10).map { "\($0)" }.joined(separator: "; "),
                    details: ["reason": "schemaViolation"])
            }
        }
        return value.jsonString
    }
}

/// A decision on an ``ApprovalRequest``, as journaled in `approvalDecided`.
public struct ApprovalDecision: Sendable, Hashable, Codable {
    public var verdict: ApprovalVerdict
    /// For `edit`: the arguments the call runs with instead (a JSON object, as text).
    public var arguments: String?
    /// For `deny`: why, as the model will read it.
    public var reason: String?
    /// Who decided: an API key's ID, `cli:USER@HOST`, or ``ApprovalDecision/timeoutDecider``.
    public var decidedBy: String

    /// The decider recorded when a request's time ran out and its default applied.
    public static let timeoutDecider = "timeout"
    /// The decider recorded when Troupe settled a request itself (its step ended first).
    public static let systemDecider = "troupe"

    public init(verdict: ApprovalVerdict, arguments: String? = nil, reason: String? = nil, decidedBy: String) {
        self.verdict = verdict
        self.arguments = arguments
        self.reason = reason
        self.decidedBy = decidedBy
    }

    /// The decision a request's timeout makes: its `onTimeout` verdict (deny when none is set;
    /// `edit` is no default and counts as deny).
    public static func timedOut(_ request: ApprovalRequest) -> ApprovalDecision {
        let verdict: ApprovalVerdict = request.onTimeout == .approve ? .approve : .deny
        return ApprovalDecision(
            verdict: verdict, reason: verdict == .deny ? "No one decided on this call in time; it was denied by default." : nil,
            decidedBy: timeoutDecider)
    }

    /// The tool result the model reads for a denied call.
    public func denialOutput(of call: ToolCall) -> ToolOutput {
        let who = decidedBy == Self.timeoutDecider || decidedBy == Self.systemDecider ? "No one approved" : "A person denied"
        return .error("\(who) this call of \(call.name), so it did not run: \(reason ?? "no reason was given").")
    }
}

/// One approval request of a run and, once made, its decision.
public struct ApprovalState: Sendable, Hashable {
    public var key: ActivityKey
    public var request: ApprovalRequest
    public var requestedAt: Date
    public var decision: ApprovalDecision?
    public var decidedAt: Date?

    public init(key: ActivityKey, request: ApprovalRequest, requestedAt: Date) {
        self.key = key
        self.request = request
        self.requestedAt = requestedAt
    }

    /// The call as it runs once approved: with the edited arguments, if any.
    public var approvedCall: ToolCall? {
        guard let decision, decision.verdict != .deny else { return nil }
        var call = request.call
        if decision.verdict == .edit, let arguments = decision.arguments { call.arguments = arguments }
        return call
    }
}

extension ToolApproval {
    /// The decision to journal for this answer, made by `decider`; `nil` for `deferred`.
    public func decision(by decider: String) -> ApprovalDecision? {
        switch self {
        case .approved: ApprovalDecision(verdict: .approve, decidedBy: decider)
        case .edited(let arguments): ApprovalDecision(verdict: .edit, arguments: arguments, decidedBy: decider)
        case .denied(let reason): ApprovalDecision(verdict: .deny, reason: reason, decidedBy: decider)
        case .deferred: nil
        }
    }
}
