import Foundation
public import Troupe
import TroupeCore

/// The rules a run's tools were given when it started — `tools.allow`/`deny`/`requireApproval`
/// and `tools.limits`, the shell and web policies, the protected paths — and a fingerprint of
/// each MCP server it could use. Journaled with the run (``RunConfiguration/toolRules``) so that
/// `resume` applies the same rules wherever it is started, instead of whatever settings the
/// current directory has.
///
/// It holds no secret: an MCP server's fingerprint is a SHA-256 of its definition without the
/// values of its variables and headers (credentials rotate; a changed program, argument, working
/// directory, URL or trust list is a different server).
public struct ToolRules: Sendable, Hashable, Codable {
    public var policy: ToolPolicy
    public var shell: Shell
    public var web: Web
    /// `tools.fs.protectedPaths`, the defaults included (the settings file and the store are
    /// added by the process, wherever they are).
    public var protectedPaths: [String]
    /// Each MCP server's fingerprint, by name.
    public var mcpServers: [String: String]

    /// ``ShellPolicy`` as journaled (durations in seconds, sets sorted).
    public struct Shell: Sendable, Hashable, Codable {
        public var allowedPrograms: [String]
        public var allowScripts: Bool
        public var searchPath: [String]
        public var inheritedVariables: [String]
        public var maxTimeoutSeconds: Double
        public var defaultTimeoutSeconds: Double
        public var maxOutputBytes: Int
        /// By program: options refused as words, and letters refused in short-option clusters.
        public var refusedOptions: [String: RefusedOptionList]
        /// `tools.shell.sandbox` (absent in runs journaled before it: `auto` then).
        public var sandbox: SandboxMode?
        /// `tools.shell.network`.
        public var network: Bool?
        /// `tools.shell.maxProcesses`, `maxFileBytes`, `maxMemoryBytes`, `maxOpenFiles` (absent
        /// in runs journaled before them: the defaults then).
        public var maxProcesses: Int?
        public var maxFileBytes: Int?
        public var maxMemoryBytes: Int?
        public var maxOpenFiles: Int?
    }

    public struct RefusedOptionList: Sendable, Hashable, Codable {
        public var words: [String]
        public var letters: String
    }

    /// ``WebFetchPolicy`` as journaled.
    public struct Web: Sendable, Hashable, Codable {
        public var allowedPrivateHosts: [String]
        public var maxRedirects: Int
        public var maxBytes: Int
        public var timeoutSeconds: Double
        public var maxTextCharacters: Int
    }

    /// The rules `settings` give a run with `toolGroups` (its MCP servers are the ones the
    /// groups name: `mcp` is every configured server, `mcp:NAME` one).
    public init(_ settings: TroupeSettings, toolGroups: [String]) {
        policy = settings.toolPolicy
        let shellPolicy = settings.shellPolicy
        shell = Shell(
            allowedPrograms: shellPolicy.allowedExecutables.sorted(), allowScripts: shellPolicy.allowShellScripts,
            searchPath: shellPolicy.searchPath, inheritedVariables: shellPolicy.inheritedVariables.sorted(),
            maxTimeoutSeconds: shellPolicy.maxTimeout.seconds, defaultTimeoutSeconds: shellPolicy.defaultTimeout.seconds,
            maxOutputBytes: shellPolicy.maxOutputBytes,
            refusedOptions: shellPolicy.refusedOptions.mapValues { options in
                RefusedOptionList(words: options.words.sorted(), letters: String(options.letters.sorted()))
            }, sandbox: shellPolicy.sandboxMode, network: shellPolicy.network, maxProcesses: shellPolicy.limits.processes,
            maxFileBytes: shellPolicy.limits.fileBytes, maxMemoryBytes: shellPolicy.limits.addressSpaceBytes,
            maxOpenFiles: shellPolicy.limits.openFiles)
        let webPolicy = settings.webPolicy
        web = Web(
            allowedPrivateHosts: webPolicy.allowedPrivateHosts.sorted(), maxRedirects: webPolicy.maxRedirects,
            maxBytes: webPolicy.maxBytes, timeoutSeconds: webPolicy.timeout.seconds, maxTextCharacters: webPolicy.maxTextCharacters)
        protectedPaths = settings.protectedPaths.patterns
        mcpServers = Dictionary(
            Self.servers(named: toolGroups, in: settings.mcpServers.map(\.name)).compactMap { name in
                settings.mcpServers.first { $0.name == name }.map { (name, Self.fingerprint(of: $0)) }
            },
            uniquingKeysWith: { first, _ in first })
    }

    /// The servers `toolGroups` name, of those `configured`, each once.
    public static func servers(named toolGroups: [String], in configured: [String]) -> [String] {
        if toolGroups.contains("mcp") { return configured }
        var seen = Set<String>()
        return namedServers(toolGroups).filter { seen.insert($0).inserted }
    }

    /// The MCP servers that `mcp:NAME` and `mcp:NAME/TOOL` entries name, in order.
    static func namedServers(_ toolGroups: [String]) -> [String] {
        toolGroups.compactMap { try? ToolSelection($0).mcpServer }
    }

    /// The rules as journaled in a run's configuration.
    public var jsonValue: JSONValue {
        // Encoding plain Codable values cannot fail.
        (try? JSONValue.parse(JSONCoding.encode(self))) ?? .null
    }

    /// The rules a run's configuration carries, or `nil` for a run journaled before they were.
    public static func journaled(in configuration: RunConfiguration) throws(TroupeError) -> ToolRules? {
        guard let value = configuration.toolRules else { return nil }
        do {
            return try JSONCoding.decode(ToolRules.self, from: Data(value.jsonString.utf8))
        } catch {
            throw TroupeError(.storage, "The run's journaled tool rules cannot be read: \(JSONCoding.describe(error)).")
        }
    }

    /// `settings` with these rules in place of their own — the tool policy, the shell and web
    /// policies, the protected paths — and with only the MCP servers the run's `toolGroups` name.
    /// A server the run had must still be defined as it was: one that is gone or changed is
    /// refused, naming it, since `mcp:NAME` would otherwise bind the run to another program. A
    /// server the groups name for the first time (`resume --tools mcp:NAME`) is taken from
    /// `settings`, and `rules` then carry its fingerprint too (journal them).
    public func applied(
        to settings: TroupeSettings, toolGroups: [String]
    ) throws(TroupeError) -> (settings: TroupeSettings, rules: ToolRules) {
        var result = settings
        result.toolPolicy = policy
        var shellPolicy = ShellPolicy(
            allowedExecutables: Set(shell.allowedPrograms), allowShellScripts: shell.allowScripts, searchPath: shell.searchPath,
            inheritedVariables: Set(shell.inheritedVariables), maxTimeout: .seconds(shell.maxTimeoutSeconds),
            defaultTimeout: .seconds(shell.defaultTimeoutSeconds), maxOutputBytes: shell.maxOutputBytes)
        // Built-in protections are this build's, added to the journaled ones: a newer Troupe's
        // stricter defaults apply to runs it resumes.
        shellPolicy.refusedOptions = shell.refusedOptions.mapValues { RefusedOptions(words: Set($0.words), letters: Set($0.letters)) }
            .merging(ShellPolicy.defaultRefusedOptions) { journaled, builtIn in
                RefusedOptions(words: journaled.words.union(builtIn.words), letters: journaled.letters.union(builtIn.letters))
            }
        // The sandbox protects the machine that resumes the run as much as the run: the stricter
        // of the journaled rule and this host's holds. A run started with `none` gets this
        // host's sandbox; one started with a sandbox keeps it here; the network is open only if
        // both allow it.
        let host = settings.shellPolicy
        shellPolicy.sandboxMode = host.sandboxMode != .none ? host.sandboxMode : (shell.sandbox ?? .auto)
        shellPolicy.network = (shell.network ?? false) && host.network
        // The limits too: each the lower of the run's and this host's.
        let defaults = Sandbox.ResourceLimits()
        shellPolicy.limits = Sandbox.ResourceLimits(
            fileBytes: min(shell.maxFileBytes ?? defaults.fileBytes, host.limits.fileBytes),
            addressSpaceBytes: min(shell.maxMemoryBytes ?? defaults.addressSpaceBytes, host.limits.addressSpaceBytes),
            openFiles: min(shell.maxOpenFiles ?? defaults.openFiles, host.limits.openFiles),
            processes: min(shell.maxProcesses ?? defaults.processes, host.limits.processes))
        result.shellPolicy = shellPolicy
        result.webPolicy = WebFetchPolicy(
            allowedPrivateHosts: Set(web.allowedPrivateHosts), maxRedirects: web.maxRedirects, maxBytes: web.maxBytes,
            timeout: .seconds(web.timeoutSeconds), maxTextCharacters: web.maxTextCharacters)
        result.protectedPaths.patterns =
            ProtectedPaths.defaultPatterns + protectedPaths.filter { !ProtectedPaths.defaultPatterns.contains($0) }
        var rules = self
        var servers: [MCPServerConfiguration] = []
        // `mcp` means the servers the run had, not whatever is configured now.
        let named = Self.namedServers(toolGroups)
        // `mcp` is the servers the run had; for a run that had none (`resume --tools mcp` adds the
        // group), the servers configured now, journaled from here on.
        let all = mcpServers.isEmpty ? settings.mcpServers.map(\.name) : Array(mcpServers.keys)
        let wanted = (toolGroups.contains("mcp") ? all : []) + named
        for name in Set(wanted).sorted() {
            let server = settings.mcpServers.first { $0.name == name }
            guard let journaled = mcpServers[name] else {
                // New to the run: checked against the settings when its tools are listed.
                if let server {
                    rules.mcpServers[name] = Self.fingerprint(of: server)
                    servers.append(server)
                }
                continue
            }
            guard let server else {
                throw TroupeError(
                    .configuration,
                    "The run was started with MCP server '\(name)', which the current settings do not define. Resume it with the "
                        + "settings it started with (--config FILE), or pass --use-current-tool-settings to go on with the current ones.")
            }
            guard Self.fingerprint(of: server) == journaled else {
                throw TroupeError(
                    .configuration,
                    "MCP server '\(name)' is not defined as it was when the run started (its command, arguments, working "
                        + "directory, URL, variable or header names, trusted tools, or sandbox changed). Resume with the settings it started "
                        + "with (--config FILE), or pass --use-current-tool-settings to adopt the new definition (it is journaled).")
            }
            servers.append(server)
        }
        result.mcpServers = servers
        return (result, rules)
    }

    /// A SHA-256 of what makes an MCP server the one it is: its program, arguments and the
    /// directory it would run in (a relative `./server.sh` is another program elsewhere), its URL,
    /// its trust lists, and its variables and headers as written (``MCPServerConfiguration/templates``:
    /// `Bearer ${TOKEN}`, which does not change when the token rotates; values not from a
    /// settings file count by name only).
    static func fingerprint(of server: MCPServerConfiguration) -> String {
        var definition: [String: JSONValue] = [
            "readOnlyTools": .array(server.readOnlyTools.map(JSONValue.string)),
            "idempotentTools": .array(server.idempotentTools.map(JSONValue.string)),
            "templates": .object(server.templates.mapValues(JSONValue.string)),
        ]
        switch server.transport {
        case .stdio(let command, let arguments, let environment, let workingDirectory):
            definition["command"] = .string(command)
            definition["arguments"] = .array(arguments.map(JSONValue.string))
            definition["variables"] = .array(environment.keys.sorted().map(JSONValue.string))
            definition["workingDirectory"] = .string(workingDirectory ?? FileManager.default.currentDirectoryPath)
        case .http(let url, let headers):
            definition["url"] = .string(url)
            definition["headers"] = .array(headers.keys.map { $0.lowercased() }.sorted().map(JSONValue.string))
        }
        // Only when set, so that the servers of runs journaled before sandboxes keep their print.
        if let sandbox = server.sandbox {
            definition["sandbox"] = .object([
                "network": .bool(sandbox.network), "readOnlyPaths": .array(sandbox.readOnlyPaths.map(JSONValue.string)),
                "writablePaths": .array(sandbox.writablePaths.map(JSONValue.string)),
            ])
        }
        return "sha256:" + SHA256.hex(JSONValue.object(definition).jsonString)
    }
}
