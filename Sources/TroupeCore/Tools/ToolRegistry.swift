/// Which tools an agent may use: an allowlist (empty means all registered tools) minus a denylist.
public struct ToolPolicy: Sendable, Hashable, Codable {
    public var allow: [String]
    public var deny: [String]

    public init(allow: [String] = [], deny: [String] = []) {
        self.allow = allow
        self.deny = deny
    }

    /// Whether the policy lets an agent use the tool called `name`.
    public func permits(_ name: String) -> Bool {
        !deny.contains(name) && (allow.isEmpty || allow.contains(name))
    }
}

/// The tools available to a run, by name, filtered by a ``ToolPolicy``.
public struct ToolRegistry: Sendable {
    private var tools: [String: any Tool] = [:]
    /// Registration order, so that specs are offered to the model in a stable order.
    public private(set) var names: [String] = []
    public var policy: ToolPolicy

    public init(_ tools: [any Tool] = [], policy: ToolPolicy = ToolPolicy()) throws(TroupeError) {
        self.policy = policy
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

    /// Specs of the permitted tools named in `subset` (all permitted tools when `subset` is empty).
    public func specs(_ subset: [String] = []) -> [ToolSpec] {
        availableNames.filter { subset.isEmpty || subset.contains($0) }.compactMap { tools[$0]?.spec }
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
