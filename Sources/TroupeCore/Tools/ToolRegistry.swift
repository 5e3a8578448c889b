/// Which tools an agent may use, and on what terms: an allowlist (empty means every registered
/// tool) minus a denylist, the tools a person must approve call by call, and limits per tool.
///
/// Names may end in `*` to match a prefix (`mcp_github_*`, `fs_*`); `*` alone matches all.
public struct ToolPolicy: Sendable, Hashable, Codable {
    public var allow: [String]
    public var deny: [String]
    /// Tools whose every call waits for a person's decision (``ToolApprover``).
    public var requireApproval: [String]
    /// Limits by tool name or pattern; the first entry that matches, by exact name before patterns.
    public var limits: [String: ToolLimits]

    public init(allow: [String] = [], deny: [String] = [], requireApproval: [String] = [], limits: [String: ToolLimits] = [:]) {
        self.allow = allow
        self.deny = deny
        self.requireApproval = requireApproval
        self.limits = limits
    }

    /// Whether the policy lets an agent use the tool called `name`.
    public func permits(_ name: String) -> Bool {
        !Self.matches(deny, name) && (allow.isEmpty || Self.matches(allow, name))
    }

    /// Whether each call of `name` needs a person's approval.
    public func needsApproval(_ name: String) -> Bool {
        Self.matches(requireApproval, name)
    }

    /// The limits for `name`: its own entry, else the longest pattern that matches, else none.
    public func limits(for name: String) -> ToolLimits {
        if let own = limits[name] { return own }
        let patterns = limits.keys.filter { $0.hasSuffix("*") && Self.matches([$0], name) }
        return patterns.max { $0.count < $1.count }.flatMap { limits[$0] } ?? ToolLimits()
    }

    /// Whether `name` is one of `patterns` (exact names, or `prefix*`).
    public static func matches(_ patterns: [String], _ name: String) -> Bool {
        patterns.contains { pattern in
            pattern.hasSuffix("*") ? name.hasPrefix(pattern.dropLast()) : pattern == name
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        allow = try container.decodeIfPresent([String].self, forKey: .allow) ?? []
        deny = try container.decodeIfPresent([String].self, forKey: .deny) ?? []
        requireApproval = try container.decodeIfPresent([String].self, forKey: .requireApproval) ?? []
        limits = try container.decodeIfPresent([String: ToolLimits].self, forKey: .limits) ?? [:]
    }
}

/// Limits on one tool's use in a run.
public struct ToolLimits: Sendable, Hashable, Codable {
    /// Calls of the tool per run; later calls are refused (the model is told).
    public var maxCallsPerRun: Int?
    /// The longest one call may take; it is then abandoned and the model told.
    public var timeoutSeconds: Double?
    /// For a tool that needs approval: how long a call waits for a person before
    /// ``approvalTimeoutDecision`` applies (`nil`: it waits until someone decides).
    public var approvalTimeoutSeconds: Double?
    /// What a call's wait ending without a decision means: `approve` or `deny` (the default).
    public var approvalTimeoutDecision: ApprovalVerdict?

    public init(
        maxCallsPerRun: Int? = nil, timeoutSeconds: Double? = nil, approvalTimeoutSeconds: Double? = nil,
        approvalTimeoutDecision: ApprovalVerdict? = nil
    ) {
        self.maxCallsPerRun = maxCallsPerRun
        self.timeoutSeconds = timeoutSeconds
        self.approvalTimeoutSeconds = approvalTimeoutSeconds
        self.approvalTimeoutDecision = approvalTimeoutDecision
    }
}

/// What an in-process ``ToolApprover`` answers about one tool call.
public enum ToolApproval: Sendable, Hashable {
    case approved
    /// Run the call with these arguments instead (a JSON object, as text).
    case edited(arguments: String)
    case denied(reason: String)
    /// No decision here: the run waits, durably, for one through the API or `troupe approve`.
    case deferred
}

/// Decides, in the driving process, calls of tools that ``ToolPolicy/requireApproval`` names —
/// by asking a person at the terminal (`troupe run`) or by rules of its own. The decision is
/// journaled (`approvalDecided`, with ``identity`` as the decider) exactly like one made through
/// the API; a `deferred` answer leaves the call waiting for those.
public protocol ToolApprover: Sendable {
    /// Who decides, as journaled (`cli:USER@HOST`, `policy:NAME`).
    var identity: String { get }
    /// The decision on `request` (the call, the tool's effect and parameters); an edit's
    /// arguments must satisfy ``ApprovalRequest/checkedArguments(_:)`` or the call keeps waiting.
    func review(_ request: ApprovalRequest, context: ToolContext) async -> ToolApproval
}

/// The tools available to a run, by name, filtered by a ``ToolPolicy``.
public struct ToolRegistry: Sendable {
    private var tools: [String: any Tool] = [:]
    /// Registration order, so that specs are offered to the model in a stable order.
    public private(set) var names: [String] = []
    public var policy: ToolPolicy
    /// Decides calls that need approval in the driving process; without one (or when it
    /// defers) they wait for a decision through the API or `troupe approve`.
    public var approver: (any ToolApprover)?

    public init(_ tools: [any Tool] = [], policy: ToolPolicy = ToolPolicy(), approver: (any ToolApprover)? = nil) throws(TroupeError) {
        self.policy = policy
        self.approver = approver
        for tool in tools { try register(tool) }
    }

    /// Adds a tool. Throws if its name is invalid for model APIs or already taken.
    public mutating func register(_ tool: any Tool) throws(TroupeError) {
        guard Self.isValidName(tool.name) else {
            throw TroupeError(.invalidInput, "Tool name '\(tool.name)' is invalid: use 1–64 letters, digits, '_' or '-'.")
        }
        guard tools[tool.name] == nil else {
            throw TroupeError(.invalidInput, "A tool named '\(tool.name)' is already registered.")
        }
        tools[tool.name] = tool
        names.append(tool.name)
    }

    /// The tool called `name`, if registered and permitted.
    public func tool(named name: String) -> (any Tool)? {
        guard policy.permits(name) else { return nil }
        return tools[name]
    }

    /// Names of the permitted tools, in registration order.
    public var availableNames: [String] { names.filter(policy.permits) }

    /// This registry with only its read-only tools: what a run with ``RunConfiguration/readOnly`` gets.
    public func readOnly() -> ToolRegistry {
        var copy = self
        copy.names = names.filter { tools[$0]?.effect == .readOnly }
        copy.tools = tools.filter { $0.value.effect == .readOnly }
        return copy
    }

    /// Specs of the permitted tools named in `subset` (all permitted tools when `subset` is empty).
    public func specs(_ subset: [String] = []) -> [ToolSpec] {
        availableNames.filter { subset.isEmpty || subset.contains($0) }.compactMap { tools[$0]?.spec }
    }

    /// The most tools a run may have available: OpenAI's limit for one request, and already
    /// thousands of prompt tokens of descriptions and schemas.
    public static let maxOfferedTools = 128

    /// This registry, if model APIs can be offered its permitted tools; else a `configuration`
    /// error that says how to narrow them.
    public func checkedForModels() throws(TroupeError) -> ToolRegistry {
        let available = availableNames.count
        guard available <= Self.maxOfferedTools else {
            throw TroupeError(
                .configuration,
                "\(available) tools are available to the run; model APIs take at most \(Self.maxOfferedTools) in a request, and each "
                    + "costs prompt tokens. Narrow them with tools.allow or tools.deny (e.g. tools.allow: [fs_*, mcp_github_issue*]).",
                details: ["reason": "tooManyTools", "available": "\(available)"])
        }
        return self
    }

    /// Whether `name` is acceptable to OpenAI-compatible APIs (`^[a-zA-Z0-9_-]{1,64}$`).
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x5F
                    || byte == 0x2D
            }
    }
}
