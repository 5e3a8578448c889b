import Foundation
public import AsyncHTTPClient
public import Logging
public import TroupeCore
public import TroupeModels

/// A tool of an MCP server, as a Troupe ``Tool`` named `mcp_<server>_<tool>`.
///
/// Its schema is the server's (in the subset ``JSONSchema`` keeps), its effect what the server's
/// configuration declares (side-effecting unless listed as read-only or idempotent), and a call
/// goes through the server's ``MCPConnection`` with its timeout and supervision.
public struct MCPTool: Tool {
    public let name: String
    public let description: String
    public let parameters: JSONSchema
    public let effect: ToolEffect
    /// The tool's name at the server.
    public let remoteName: String
    let connection: MCPConnection

    /// The longest description passed on to the model (a server's text costs tokens on every call).
    static let maxDescriptionCharacters = 2000
    /// The largest input schema taken, as JSON text (it goes into every request that offers the tool).
    static let maxSchemaBytes = 32 << 10

    init(_ remote: MCPRemoteTool, name: String, connection: MCPConnection) {
        self.name = name
        self.remoteName = remote.name
        self.connection = connection
        let server = connection.configuration.name
        let text = Self.oneLine(remote.description)
        description =
            (text.isEmpty
                ? "\(Self.oneLine(remote.name).clipped(to: 128)) (no description)" : text.clipped(to: Self.maxDescriptionCharacters))
            + " [MCP server '\(server)']"
        var schema = (try? JSONSchema(jsonValue: remote.inputSchema)) ?? JSONSchema(types: ["object"])
        if schema.types.isEmpty { schema.types = ["object"] }
        parameters = schema
        effect = connection.configuration.effect(of: remote.name)
    }

    /// Why Troupe does not offer the server's tool, or `nil`: its arguments must be an object
    /// (MCP says so, and a model calls with an object), and its schema of a reasonable size.
    static func problem(with remote: MCPRemoteTool) -> String? {
        let types = remote.inputSchema["type"].map { $0.arrayValue ?? [$0] }?.compactMap(\.stringValue) ?? ["object"]
        guard remote.inputSchema.objectValue != nil, types.contains("object") else {
            return "its input schema is not an object schema"
        }
        let size = remote.inputSchema.jsonString.utf8.count
        guard size <= maxSchemaBytes else { return "its input schema is \(size >> 10) KiB, over \(maxSchemaBytes >> 10) KiB" }
        return nil
    }

    /// A server's text on one line: line breaks and other control characters become spaces, so
    /// a description cannot start lines of its own in the planner's prompt.
    static func oneLine(_ text: String) -> String {
        var result = ""
        var pendingSpace = false
        for scalar in text.unicodeScalars {
            if scalar.properties.generalCategory == .control || scalar == "\u{2028}" || scalar == "\u{2029}" || scalar == " " {
                pendingSpace = !result.isEmpty
                continue
            }
            if pendingSpace { result.append(" ") }
            pendingSpace = false
            result.unicodeScalars.append(scalar)
        }
        return result
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        try await connection.call(remoteName, arguments: arguments)
    }
}

/// The MCP servers of a configuration: their connections, their tools, and their shutdown.
public struct MCPServers: Sendable {
    public let connections: [MCPConnection]
    private let logger: Logger

    /// - Parameter httpClient: for servers reached over HTTP (owned by the caller, who shuts it
    ///   down after ``shutdown()``); by default the process-wide client of model calls.
    public init(
        _ configurations: [MCPServerConfiguration],
        httpClient: HTTPClient = OpenAIChatModel.sharedHTTPClient,
        logger: Logger
    ) throws(TroupeError) {
        self.logger = logger
        var seen = Set<String>()
        for configuration in configurations {
            try configuration.validate()
            guard seen.insert(configuration.name).inserted else {
                throw TroupeError(.configuration, "Two MCP servers are named '\(configuration.name)'.")
            }
        }
        connections = configurations.map { MCPConnection($0, httpClient: httpClient, logger: logger) }
    }

    private init(connections: [MCPConnection], logger: Logger) {
        self.connections = connections
        self.logger = logger
    }

    /// The servers named in `names`, sharing these connections (``shutdown()`` of this value
    /// stops them all).
    public func only(_ names: Set<String>) -> MCPServers {
        MCPServers(connections: connections.filter { names.contains($0.configuration.name) }, logger: logger)
    }

    /// The names of the servers.
    public var names: [String] { connections.map(\.configuration.name) }

    /// Starts (or connects to) the servers named in `names` — all of them when `nil` — at once,
    /// and returns their tools. Throws, naming the server and why, if one cannot be used.
    public func tools(of names: [String]? = nil) async throws(TroupeError) -> [any Tool] {
        if let names, let unknown = names.first(where: { !self.names.contains($0) }) {
            throw TroupeError(
                .configuration,
                "There is no MCP server named '\(unknown)' (configured: \(self.names.isEmpty ? "none" : self.names.joined(separator: ", ")))."
            )
        }
        let chosen = connections.filter { names?.contains($0.configuration.name) ?? true }
        let listed: [(Int, Result<[MCPRemoteTool], TroupeError>)] = await withTaskGroup(
            of: (Int, Result<[MCPRemoteTool], TroupeError>).self
        ) {
            group in
            for (index, connection) in chosen.enumerated() {
                group.addTask {
                    do throws(TroupeError) {
                        return (index, .success(try await connection.listTools()))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        var offered: [(connection: MCPConnection, remote: MCPRemoteTool)] = []
        for (index, result) in listed.sorted(by: { $0.0 < $1.0 }) {
            let connection = chosen[index]
            switch result {
            case .success(let remotes):
                for remote in remotes {
                    if let problem = MCPTool.problem(with: remote) {
                        logger.warning(
                            "MCP tool left out",
                            metadata: [
                                "server": "\(connection.configuration.name)", "tool": "\(remote.name.prefix(128))",
                                "reason": "\(problem)",
                            ])
                        continue
                    }
                    offered.append((connection, remote))
                }
            case .failure(let error):
                throw TroupeError(.configuration, "MCP server '\(connection.configuration.name)' cannot be used: \(error.message)")
            }
        }
        let names = MCPToolName.assign(offered.map { ($0.connection.configuration.name, $0.remote.name) })
        return zip(offered, names).map { MCPTool($0.remote, name: $1, connection: $0.connection) }
    }

    /// Stops every server (stdio processes and their process groups, HTTP sessions).
    public func shutdown() async {
        await withTaskGroup(of: Void.self) { group in
            for connection in connections { group.addTask { await connection.shutdown() } }
        }
    }
}

/// `mcp_<server>_<tool>`, within what model APIs accept (`^[a-zA-Z0-9_-]{1,64}$`).
enum MCPToolName {
    /// Names for `tools` (server, tool at the server), in their order. Where two come out the
    /// same, the one whose name needed no change keeps the plain name, then the first by server
    /// and tool name; the others end with a hash of their own name. So a name depends on which
    /// tools exist, never on the order the servers list them.
    static func assign(_ tools: [(server: String, tool: String)]) -> [String] {
        let plain = tools.map { make(server: $0.server, tool: $0.tool) }
        var claimants: [String: [Int]] = [:]
        for (index, name) in plain.enumerated() { claimants[name, default: []].append(index) }
        var names = plain
        var taken = Set(plain)
        for name in claimants.keys.sorted() {
            guard let indices = claimants[name], indices.count > 1 else { continue }
            let winner = indices.min { lhs, rhs in
                let left = (name == "mcp_\(tools[lhs].server)_\(tools[lhs].tool)" ? 0 : 1, tools[lhs].server, tools[lhs].tool)
                let right = (name == "mcp_\(tools[rhs].server)_\(tools[rhs].tool)" ? 0 : 1, tools[rhs].server, tools[rhs].tool)
                return left < right
            }
            for index in indices where index != winner {
                var name = make(server: tools[index].server, tool: tools[index].tool, taken: taken)
                // A hashed name may itself be taken (a tool literally named so, or a hash collision).
                var attempt = 1
                while taken.contains(name) {
                    attempt += 1
                    name = make(server: tools[index].server, tool: tools[index].tool + "#\(attempt)", taken: taken)
                }
                names[index] = name
                taken.insert(name)
            }
        }
        return names
    }

    /// Other characters become `_`; a name too long, or already taken by another tool of the
    /// server, is cut and ends with a hash of the tool's own name, so it stays stable.
    static func make(server: String, tool: String, taken: Set<String> = []) -> String {
        let cleaned = String(
            tool.unicodeScalars.map { scalar in
                scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || scalar == "_" || scalar == "-")
                    ? Character(scalar) : "_"
            })
        let plain = "mcp_\(server)_\(cleaned.isEmpty ? "tool" : cleaned)"
        if plain.utf8.count <= 64, !taken.contains(plain) { return plain }
        let suffix = "_" + hash(tool)
        return String(plain.prefix(64 - suffix.count)) + suffix
    }

    /// FNV-1a, 32 bits, as 8 hex digits.
    private static func hash(_ text: String) -> String {
        var value: UInt32 = 2_166_136_261
        for byte in text.utf8 {
            value ^= UInt32(byte)
            value = value &* 16_777_619
        }
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}
