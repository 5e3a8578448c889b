import ArgumentParser
import Foundation
import Logging
import Troupe
import TroupeSettings
import TroupeTools

/// `--store`, `--config`, `--set` and `--verbose`, accepted by every command.
struct GlobalOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Where runs are stored: sqlite:PATH or postgres://USER@HOST[:PORT]/DB (default: $TROUPE_STORE, else `store` in "
                + "troupe.yaml, else ~/.troupe/troupe.db).",
            valueName: "url"
        )
    )
    var store: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "A settings file (default: $TROUPE_CONFIG, else ./troupe.yaml if there is one). See docs/CONFIGURATION.md.",
            valueName: "file"
        )
    )
    var config: String?

    @Option(
        name: .customLong("set"),
        help: ArgumentHelp(
            "Set one setting, over the environment and the file; repeatable (e.g. --set model.retry.maxAttempts=5).",
            valueName: "key=value"
        )
    )
    var overrides: [String] = []

    @Flag(name: .long, help: "Print error details and debug logs.")
    var verbose = false

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Log lines as json (one object a line) or text (default: log.format, else json for serve and worker, text otherwise).",
            valueName: "format"))
    var logFormat: LogFormat?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The least level logged: trace, debug, info, notice, warning, error, critical (default: log.level, else info for "
                + "serve and worker, warning otherwise; debug with --verbose).", valueName: "level"),
        transform: { text in
            guard let level = Logger.Level(rawValue: text) else {
                throw ValidationError(
                    "--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")) (got \(text)).")
            }
            return level
        })
    var logLevel: Logger.Level?

    /// Sets how this process logs, from the flags, then `log.*` in `settings`, then the
    /// command's defaults (`service`: `serve` and `worker`, JSON at `info`).
    func configureLogging(_ settings: TroupeSettings, service: Bool) {
        // A level given on the command line holds for every logger.
        let flagged = logLevel ?? (verbose ? .debug : nil)
        LogOutput.configure(
            format: logFormat ?? settings.log.format ?? (service ? .json : .text),
            level: flagged ?? settings.log.level ?? (service ? .info : .warning),
            levels: flagged == nil ? settings.log.levels : [:])
    }

    /// The settings: `--set`, then the environment, then the settings file, then the defaults.
    func settings(environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> TroupeSettings {
        try await TroupeSettings.load(file: config, overrides: overrides, environment: environment)
    }

    /// The settings, with an implicit `./troupe.yaml` only if it is outside `workspace`; one inside
    /// is refused with a `configuration` error (see ``withRuntime(workspace:_:)``).
    private func settings(workspace: ((TroupeSettings) async throws -> String)?) async throws -> TroupeSettings {
        guard let workspace, let implicit = TroupeSettings.implicitFile(named: config) else { return try await settings() }
        let base = try await TroupeSettings.load(file: nil, overrides: overrides, readingImplicitFile: false)
        if !Self.path(implicit, isInside: try await workspace(base)) { return try await settings() }
        // Going on without it would drop what it narrows (a smaller workspace, denied tools):
        // the user decides.
        throw TroupeError(
            .configuration,
            "./troupe.yaml is inside the run's workspace, where the model can write, so it is not read by itself. "
                + "If you wrote it, name it: --config troupe.yaml; or run from another directory, or give --workspace "
                + "a folder that does not contain it (docs/CONFIGURATION.md).")
    }

    /// Whether `path` is `directory` or inside it, both with symbolic links resolved.
    static func path(_ path: String, isInside directory: String) -> Bool {
        // Resolved as the workspace resolves paths (realpath), so both sides agree.
        let file = Array((Workspace.realPath(path) ?? path).utf8)
        let root = Array((Workspace.realPath(directory) ?? directory).utf8)
        return file == root || root == [0x2F] || file.starts(with: root + [0x2F])
    }

    /// The store URL after the flag, then the settings (environment, file), then the default.
    func storeURL(_ settings: TroupeSettings) -> String {
        if let store, !store.isEmpty { return store }
        return settings.store ?? "sqlite:" + StoreLocation.defaultPath
    }

    /// Runs `body` with the store the settings name, closing it afterwards.
    func withStore<T: Sendable>(_ body: (OpenedStore) async throws -> T) async throws -> T {
        try await withStore(settings: settings(), body)
    }

    func withStore<T: Sendable>(settings: TroupeSettings, service: Bool = false, _ body: (OpenedStore) async throws -> T)
        async throws -> T
    {
        configureLogging(settings, service: service)
        var opened = try await OpenedStore.open(storeURL(settings), logger: logger(label: "troupe.store"))
        opened.prices = settings.prices
        return try await opened.store.closing { _ in try await body(opened) }
    }

    /// Runs `body` with the store, the settings and an HTTP client for model calls (connecting
    /// within the settings' connect timeout), closing store and client afterwards.
    ///
    /// - Parameter workspace: for commands that give a model tools, the run's workspace as the
    ///   settings *without* an implicit `./troupe.yaml` decide it. Such a file is then read only
    ///   if it lies outside that workspace: inside it, the model could have written it (a new MCP
    ///   server `sh -c …`, an endpoint that receives the API key), so the command stops and asks
    ///   for `--config` (or `TROUPE_CONFIG`).
    ///   - namedFileOnly: read a settings file only if it is named (`--config`, `TROUPE_CONFIG`),
    ///     never an implicit `./troupe.yaml`: for commands that drive runs whose workspaces they
    ///     do not choose (`worker`, `serve`).
    func withRuntime<T: Sendable>(
        workspace: ((TroupeSettings) async throws -> String)? = nil,
        namedFileOnly: Bool = false,
        _ body: (Runtime) async throws -> T
    ) async throws -> T {
        let settings =
            namedFileOnly
            ? try await TroupeSettings.load(file: config, overrides: overrides, readingImplicitFile: false)
            : try await settings(workspace: workspace)
        // From here on programs may start (MCP servers, with the first tool listing): Ctrl-C
        // must stop them, even before a run exists.
        Signals.exitStoppingChildren()
        return try await withStore(settings: settings, service: namedFileOnly) { store in
            try await OpenAIChatModel.withHTTPClient(timeouts: settings.resilience.timeouts) { client in
                // MCP servers start when a run asks for their tools, and stop when the command ends.
                let mcp = try MCPServers(settings.mcpServers, httpClient: client, logger: logger(label: "troupe.mcp"))
                do {
                    let result = try await body(
                        Runtime(opened: store, settings: settings, logger: logger(label: "troupe"), httpClient: client, mcp: mcp))
                    await mcp.shutdown()
                    return result
                } catch {
                    await mcp.shutdown()
                    throw error
                }
            }
        }
    }

    /// A logger at the level ``configureLogging(_:service:)`` gave its label.
    func logger(label: String) -> Logger {
        Logger(label: label)
    }
}

/// Parses store URLs.
enum StoreLocation {
    /// `~/.troupe/troupe.db` (`$HOME` first): where runs go when neither `--store` nor
    /// `TROUPE_STORE` nor the settings file says otherwise.
    static var defaultPath: String {
        TroupeSettings.homeDirectory() + "/.troupe/troupe.db"
    }

    /// The default store's folder and files are made the user's only, even when an older Troupe
    /// created them readable by others (0755 and 0644 under the usual umask).
    static func restrictDefaultStore() {
        let path = defaultPath
        PrivateFiles.restrict((path as NSString).deletingLastPathComponent, to: 0o700)
        for file in [path, path + "-wal", path + "-shm", path + "-journal"] { PrivateFiles.restrict(file, to: 0o600) }
    }

    static func isPostgres(_ url: String) -> Bool {
        url.hasPrefix("postgres://") || url.hasPrefix("postgresql://")
    }

    static func sqlitePath(_ url: String) throws(TroupeError) -> String {
        var path: Substring
        if url.hasPrefix("sqlite://") {
            path = url.dropFirst("sqlite://".count)
        } else if url.hasPrefix("sqlite:") {
            path = url.dropFirst("sqlite:".count)
        } else if url.contains("://") {
            throw TroupeError(
                .configuration, "Unknown store URL '\(PostgresLocation.redacted(url))'. Use sqlite:PATH or postgres://USER@HOST/DB.")
        } else {
            path = Substring(url)
        }
        guard !path.isEmpty else {
            throw TroupeError(.configuration, "The store URL '\(url)' has no path. Use sqlite:PATH.")
        }
        if path.hasPrefix("~/") {
            path = Substring(TroupeSettings.homeDirectory() + path.dropFirst(1))
        }
        return URL(fileURLWithPath: String(path)).standardizedFileURL.path
    }
}

/// The store a command works on — a SQLite file or a PostgreSQL database — and how to name it
/// to the user.
struct OpenedStore: Sendable {
    let store: any RunStore
    /// The same store's API keys.
    let keys: any KeyStore
    /// The SQLite file, which the file tools protect (`nil` for PostgreSQL).
    let file: String?
    /// For people: the file's path, or the URL without its password.
    let location: String
    /// ` --store …` that repeats this store in a hint; empty for the default store.
    let flag: String
    /// The prices runs are costed with (`prices` in the settings over the built-in table).
    var prices = PriceTable.builtIn

    /// Opens the store `url` names (`sqlite:PATH`, a bare path, or `postgres://…`).
    static func open(_ url: String, logger: Logger) async throws -> OpenedStore {
        if StoreLocation.isPostgres(url) {
            let store = try await PostgresRunStore.open(url: url, logger: logger)
            return OpenedStore(store: store, keys: store, file: nil, location: store.location, flag: " --store \(store.location)")
        }
        let path = try StoreLocation.sqlitePath(url)
        let isDefault = path == StoreLocation.defaultPath
        if isDefault { StoreLocation.restrictDefaultStore() }
        let store = try await SQLiteRunStore.open(path: path, logger: logger)
        return OpenedStore(store: store, keys: store, file: path, location: path, flag: isDefault ? "" : " --store sqlite:\(path)")
    }
}

/// How to run: the model, the tools, the limits. `run` takes them; `resume` takes them as overrides.
struct RunOptions: ParsableArguments {
    @Option(name: .long, help: "The model name (default: gpt-4o-mini, or $TROUPE_MODEL).")
    var model: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "An OpenAI-compatible API root (default: $OPENAI_BASE_URL, else OpenAI).", valueName: "url"))
    var baseURL: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The directory the file tools may touch (default: the current directory).", valueName: "dir"))
    var workspace: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Tools, comma-separated: groups (fs, shell, web, mcp for every MCP server configured, mcp:NAME for one), single "
                + "tools (fs_read, shell_run, mcp:NAME/TOOL, …), or none (default: fs).", valueName: "list"))
    var tools: String?

    @Option(name: .long, help: "The most steps a plan may have (default: 10).")
    var maxSteps: Int?

    @Option(name: .long, help: "How many ready steps run at once (default: 4).")
    var maxConcurrency: Int?

    @Option(
        name: .long, help: "Model turns per step before a final answer without tools (default: 8).")
    var maxIterations: Int?

    @Option(name: .long, help: "Seconds a step may take (default: 300).")
    var stepTimeout: Double?

    @Option(name: .long, help: "Output token cap per model call.")
    var maxTokens: Int?

    @Flag(name: .long, inversion: .prefixedNo, help: "Stream model answers over SSE (default: off).")
    var stream: Bool?

    @Flag(
        name: .long, inversion: .prefixedNo,
        help: "Offer the run only the tools that only read: no writes, no commands, no MCP tools that change anything (default: off).")
    var readOnly: Bool?

    /// Whether no run option was given.
    var isEmpty: Bool {
        let given: [Any?] = [
            model, baseURL, workspace, tools, maxSteps, maxConcurrency, maxIterations, stepTimeout, maxTokens, stream, readOnly,
        ]
        return given.allSatisfy { $0 == nil }
    }

    /// `base` with every option given on the command line applied.
    func applied(to base: RunConfiguration) throws -> RunConfiguration {
        var configuration = base
        if let model { configuration.model = model }
        if let baseURL { configuration.baseURL = TroupeSettings.withoutCredentials(baseURL) }
        if let workspace {
            configuration.workspace = URL(fileURLWithPath: workspace).standardizedFileURL.path
        }
        if let tools { configuration.tools = try Self.toolGroups(tools) }
        if let maxSteps { configuration.maxSteps = maxSteps }
        if let maxConcurrency { configuration.maxConcurrentSteps = maxConcurrency }
        if let maxIterations { configuration.maxIterations = maxIterations }
        if let stepTimeout { configuration.stepTimeoutSeconds = stepTimeout }
        if let maxTokens { configuration.maxTokens = maxTokens }
        if let stream { configuration.stream = stream }
        if let readOnly { configuration.readOnly = readOnly ? true : nil }
        return try configuration.validated()
    }

    /// The configuration of a new run: the settings' defaults (file, environment, `--set`), then
    /// the flags.
    func newRunConfiguration(_ settings: TroupeSettings) throws -> RunConfiguration {
        var configuration = try applied(to: settings.runDefaults)
        configuration.toolRules = ToolRules(settings, toolGroups: configuration.tools).jsonValue
        return configuration
    }

    /// The entries of a `--tools` list (groups or single tools), checked; `none` is the empty list.
    static func toolGroups(_ list: String) throws(TroupeError) -> [String] {
        let entries = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if entries == ["none"] { return [] }
        _ = try ToolSelection.parse(entries)
        return entries
    }

}

extension LogFormat: ExpressibleByArgument {}
