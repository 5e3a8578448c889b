public import TroupeCore
import TroupeTools

/// One MCP server a run may use: how to reach it, and how far to trust it.
///
/// In `troupe.yaml` it is `mcp.servers.NAME` (docs/CONFIGURATION.md); its tools reach the model
/// as `mcp_NAME_TOOL`.
public struct MCPServerConfiguration: Sendable, Hashable {
    /// How the server is reached.
    public enum Transport: Sendable, Hashable {
        /// A program Troupe starts and talks to over its stdin and stdout (JSON-RPC, one message
        /// per line), restarting it when it dies.
        ///
        /// - Parameters:
        ///   - command: the program: a path, or a name looked up in `PATH`.
        ///   - environment: variables the server gets on top of a scrubbed base (`PATH`, `HOME`,
        ///     `LANG`, `LC_*`, `TZ`, `TMPDIR`): Troupe's own secrets never reach it.
        ///   - workingDirectory: where it runs; `nil` is the current directory.
        case stdio(command: String, arguments: [String], environment: [String: String], workingDirectory: String?)
        /// A server that speaks MCP's streamable HTTP transport at `url` (e.g.
        /// `http://127.0.0.1:8000/mcp`), with `headers` on every request (e.g. `Authorization`).
        case http(url: String, headers: [String: String])
    }

    /// `[a-zA-Z0-9_-]`, at most 32 characters: it is part of the tools' names.
    public var name: String
    public var transport: Transport
    /// The longest one tool call may take before it is cancelled and the model is told.
    public var callTimeout: Duration
    /// The longest starting (or restarting) the server and listing its tools may take.
    public var startupTimeout: Duration
    /// Tools (by their server names; `prefix*` patterns) that only read. Durable resume runs an
    /// unfinished read-only call again; every other MCP tool counts as side-effecting (never
    /// repeated) unless listed in ``idempotentTools``. The server's own annotations are hints
    /// from a program Troupe does not control, so they are not trusted for this.
    public var readOnlyTools: [String]
    /// Tools whose repeated call has the same effect as one.
    public var idempotentTools: [String]
    /// Restarts allowed within ``restartWindow`` before the server is given up on (each later
    /// call is then refused with the reason, until the window has passed).
    public var maxRestarts: Int
    public var restartWindow: Duration
    /// Its variables and headers as the settings wrote them, before `${NAME}` was replaced
    /// (`env.NAME` and `headers.NAME` → text): what identifies the server without the secrets
    /// the variables hold. Empty when it was not made from settings.
    public var templates: [String: String] = [:]
    /// The sandbox a stdio server runs in (`mcp.servers.NAME.sandbox: true`), or `nil`: none, it
    /// runs as Troupe's user with everything that user may reach.
    public var sandbox: Sandboxing?

    /// How a stdio server is sandboxed: bubblewrap, as `shell_run` is (``Sandbox``), with no
    /// workspace. It sees the system's programs and libraries, a minimal `/etc`, a private `/tmp`
    /// (its `HOME` and `TMPDIR`), its working directory read-only, and only the paths listed
    /// here; the network only if ``network``.
    public struct Sandboxing: Sendable, Hashable {
        /// Whether the server may use the network (the host's).
        public var network: Bool
        /// Absolute paths it may read: where it is installed (a virtual environment, the Python
        /// it links to), its data.
        public var readOnlyPaths: [String]
        /// Absolute paths it may write.
        public var writablePaths: [String]

        public init(network: Bool = false, readOnlyPaths: [String] = [], writablePaths: [String] = []) {
            self.network = network
            self.readOnlyPaths = readOnlyPaths
            self.writablePaths = writablePaths
        }

        /// Refuses a path — listed, or the working directory — that would open the system or a
        /// home folder to the server (``Sandbox/exposure(of:writable:)``): checked when the
        /// settings are read and again at every start (a folder may have become a link since).
        func checkPaths(server: String, workingDirectory: String?) throws(TroupeError) {
            let paths =
                readOnlyPaths.map { ($0, false) } + writablePaths.map { ($0, true) }
                + [workingDirectory].compactMap { $0 }.map { ($0, false) }
            for (path, writable) in paths {
                guard let exposed = Sandbox.exposure(of: path, writable: writable) else { continue }
                throw TroupeError(
                    .configuration,
                    "MCP server '\(server)': its sandbox may not \(writable ? "write" : "see") '\(exposed)'"
                        + (exposed == path ? "" : " ('\(path)' leads there)")
                        + " (the system, a home folder or a folder above them); list the folders it needs only.")
            }
        }
    }

    public init(
        name: String,
        transport: Transport,
        callTimeout: Duration = .seconds(60),
        startupTimeout: Duration = .seconds(30),
        readOnlyTools: [String] = [],
        idempotentTools: [String] = [],
        maxRestarts: Int = 5,
        restartWindow: Duration = .seconds(60)
    ) {
        self.name = name
        self.transport = transport
        self.callTimeout = callTimeout
        self.startupTimeout = startupTimeout
        self.readOnlyTools = readOnlyTools
        self.idempotentTools = idempotentTools
        self.maxRestarts = maxRestarts
        self.restartWindow = restartWindow
    }

    /// Throws if the name cannot be part of a tool name, or the transport is unusable.
    public func validate() throws(TroupeError) {
        guard Self.isValidName(name) else {
            throw TroupeError(
                .configuration, "MCP server name '\(name)' is invalid: use 1–32 letters, digits, '_' or '-' (it is part of tool names).")
        }
        switch transport {
        case .stdio(let command, _, _, _):
            guard !command.isEmpty, !command.contains("\0") else {
                throw TroupeError(.configuration, "MCP server '\(name)' has no command to start.")
            }
        case .http(let url, _):
            guard let scheme = url.split(separator: ":").first?.lowercased(), scheme == "http" || scheme == "https",
                url.contains("://")
            else {
                throw TroupeError(.configuration, "MCP server '\(name)': url must be an http or https URL (got '\(url)').")
            }
        }
        if let sandbox {
            guard case .stdio(_, _, _, let directory) = transport else {
                throw TroupeError(.configuration, "MCP server '\(name)': sandbox is for servers Troupe starts (command), not for a url.")
            }
            for path in sandbox.readOnlyPaths + sandbox.writablePaths where !path.hasPrefix("/") || path.contains("\0") {
                throw TroupeError(.configuration, "MCP server '\(name)': sandbox paths must be absolute (got '\(path)').")
            }
            try sandbox.checkPaths(server: name, workingDirectory: directory)
        }
        guard callTimeout > .zero, startupTimeout > .zero else {
            throw TroupeError(.configuration, "MCP server '\(name)': timeouts must be positive.")
        }
    }

    /// What calling the server's tool `tool` does, as this configuration declares it.
    public func effect(of tool: String) -> ToolEffect {
        if ToolPolicy.matches(readOnlyTools, tool) { return .readOnly }
        if ToolPolicy.matches(idempotentTools, tool) { return .idempotent }
        return .sideEffecting
    }

    static func isValidName(_ name: String) -> Bool {
        name.utf8.count <= 32 && ToolRegistry.isValidName(name)
    }
}
