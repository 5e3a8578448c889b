public import TroupeCore

/// One entry of a run's `tools` list: a whole group of tools or a single tool.
///
/// - `fs`, `shell`, `web`: the built-in groups; `mcp`: every configured MCP server's tools;
///   `mcp:NAME`: one server's tools.
/// - `fs_read`, `shell_run`, `web_fetch`, …: one built-in tool (see ``builtInGroups``);
///   `mcp:NAME/TOOL`: one tool of an MCP server, by its name at the server.
///
/// A run's configuration keeps the entries as written (they are journaled); this type reads them.
public enum ToolSelection: Sendable, Hashable, CustomStringConvertible {
    /// A built-in group: `fs`, `shell` or `web`.
    case group(String)
    /// One built-in tool, and the group it belongs to.
    case tool(String, group: String)
    /// Every configured MCP server (`mcp`).
    case allMCPServers
    /// One MCP server's tools (`mcp:NAME`).
    case mcpServer(String)
    /// One tool of an MCP server (`mcp:NAME/TOOL`).
    case mcpTool(server: String, tool: String)

    /// The built-in tools of each built-in group, by their names.
    public static let builtInGroups: [String: [String]] = [
        "fs": ["fs_read", "fs_write", "fs_append", "fs_list", "fs_search", "fs_patch"],
        "shell": ["shell_run"],
        "web": ["web_fetch"],
    ]

    /// What an entry may be, for error messages.
    public static let accepted = "tool groups (fs, shell, web, mcp, mcp:NAME) or single tools (fs_read, shell_run, mcp:NAME/TOOL, …)"

    /// Reads one entry of a `tools` list.
    public init(_ entry: String) throws(TroupeError) {
        if Self.builtInGroups[entry] != nil {
            self = .group(entry)
        } else if let group = Self.builtInGroups.first(where: { $0.value.contains(entry) })?.key {
            self = .tool(entry, group: group)
        } else if entry == "mcp" {
            self = .allMCPServers
        } else if entry.hasPrefix("mcp:") {
            let rest = entry.dropFirst(4)
            if let slash = rest.firstIndex(of: "/") {
                let server = String(rest[..<slash])
                let tool = String(rest[rest.index(after: slash)...])
                guard ToolRegistry.isValidName(server), ToolRegistry.isValidName(tool) else { throw Self.unknown(entry) }
                self = .mcpTool(server: server, tool: tool)
            } else {
                guard ToolRegistry.isValidName(String(rest)) else { throw Self.unknown(entry) }
                self = .mcpServer(String(rest))
            }
        } else {
            throw Self.unknown(entry)
        }
    }

    /// Reads a whole `tools` list, refusing the first entry that is neither a group nor a tool.
    public static func parse(_ entries: [String]) throws(TroupeError) -> [ToolSelection] {
        var selections: [ToolSelection] = []
        for entry in entries { selections.append(try ToolSelection(entry)) }
        return selections
    }

    private static func unknown(_ entry: String) -> TroupeError {
        TroupeError(.invalidInput, "Unknown tool or tool group '\(entry)'. This build has \(accepted).", details: ["tool": entry])
    }

    public var description: String {
        switch self {
        case .group(let name), .tool(let name, _): name
        case .allMCPServers: "mcp"
        case .mcpServer(let server): "mcp:\(server)"
        case .mcpTool(let server, let tool): "mcp:\(server)/\(tool)"
        }
    }

    /// The MCP server this entry names, if it names one.
    public var mcpServer: String? {
        switch self {
        case .mcpServer(let server), .mcpTool(let server, _): server
        default: nil
        }
    }

    /// Whether an allowlist of entries (a server's `server.allowedTools`) covers this entry: it is
    /// listed itself, or a group that holds it is (`fs` covers `fs_read`, `mcp:NAME` covers
    /// `mcp:NAME/TOOL`, `mcp` covers every server and its tools).
    public func isAllowed(by allowed: [ToolSelection]) -> Bool {
        allowed.contains { allowing in
            switch (allowing, self) {
            case _ where allowing == self: true
            case (.group(let group), .tool(_, let toolGroup)): group == toolGroup
            case (.allMCPServers, .mcpServer), (.allMCPServers, .mcpTool): true
            case (.mcpServer(let server), .mcpTool(let toolServer, _)): server == toolServer
            default: false
            }
        }
    }
}
