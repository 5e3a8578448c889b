import Configuration
import Foundation
public import Logging
public import Troupe
import Yams

/// Troupe's settings, layered by swift-configuration: `--set KEY=VALUE` (and the command's own
/// flags, applied on top by the CLI) over the environment over `troupe.yaml` over the defaults.
///
/// Every key is in ``SettingKeys``; a key that is not, a value of the wrong type or out of range,
/// and an API key in the file are refused with an error naming the key and where it came from.
/// Secrets (API keys) come from the environment only and are never printed.
public struct TroupeSettings: Sendable {
    /// The store URL, if set (`store`, `TROUPE_STORE`).
    public var store: String?
    /// The configuration of new runs before their flags: model, endpoint, workspace, tools, limits.
    public var runDefaults: RunConfiguration
    /// The primary model's API key (`OPENAI_API_KEY`, or the variable `model.apiKeyEnv` names).
    public var apiKey: String?
    /// Timeouts, retries, rate limits and breakers of model calls (the fallbacks are in
    /// ``fallbacks``: they depend on the run's endpoint).
    public var resilience: ModelResilience
    /// `model.fallbacks`, in order.
    public var fallbacks: [Fallback] = []
    /// What the file tools never write (`tools.fs.protectedPaths`); the command adds the settings
    /// file in use and the store.
    public var protectedPaths = ProtectedPaths()
    /// What `shell_run` may do (`tools.shell.*`).
    public var shellPolicy = ShellPolicy()
    /// What `web_fetch` may reach (`tools.web.*`).
    public var webPolicy = WebFetchPolicy()
    /// Which tools runs may use, which need approval, and limits per tool (`tools.allow`,
    /// `tools.deny`, `tools.requireApproval`, `tools.limits.NAME.*`).
    public var toolPolicy = ToolPolicy()
    /// The MCP servers runs may use (`mcp.servers.NAME.*`), by name.
    public var mcpServers: [MCPServerConfiguration] = []
    /// How `troupe worker` (and the runs `troupe serve` drives itself) claim and drain runs (`worker.*`).
    public var worker = WorkerSettings()
    /// What `troupe serve` lets API callers choose (`server.*`).
    public var server = ServerSettings()
    /// `log.*`.
    public var log = LogSettings()
    /// What model calls cost: the built-in table with `prices` over it.
    public var prices = PriceTable.builtIn
    /// The `troupe.yaml` that was read, if any.
    public var file: String?

    public init(
        store: String? = nil,
        runDefaults: RunConfiguration = RunConfiguration(),
        apiKey: String? = nil,
        resilience: ModelResilience = ModelResilience(),
        file: String? = nil
    ) {
        self.store = store
        self.runDefaults = runDefaults
        self.apiKey = apiKey
        self.resilience = resilience
        self.file = file
    }

    /// A model to fall back on.
    public struct Fallback: Sendable, Hashable {
        public var model: String
        /// Its API root; `nil` is the run's own endpoint.
        public var baseURL: String?
        /// Its key, from the variable its `apiKeyEnv` names.
        public var apiKey: String?
        /// Whether it names a key variable of its own; if not, it shares the run's key when it is
        /// on the run's endpoint, and has none elsewhere.
        public var hasOwnKey: Bool

        public init(model: String, baseURL: String? = nil, apiKey: String? = nil, hasOwnKey: Bool = false) {
            self.model = model
            self.baseURL = baseURL
            self.apiKey = apiKey
            self.hasOwnKey = hasOwnKey
        }
    }

    /// The resilience settings of a run's model calls, its fallbacks resolved against the run's
    /// endpoint.
    public func resilience(for configuration: RunConfiguration) -> ModelResilience {
        let primary = endpoint(for: configuration)
        var resilience = self.resilience
        resilience.fallbacks = fallbacks.map { fallback in
            let baseURL = fallback.baseURL ?? primary.baseURL
            let apiKey = fallback.hasOwnKey ? fallback.apiKey : (baseURL == primary.baseURL ? primary.apiKey : nil)
            return ModelEndpoint(baseURL: baseURL, apiKey: apiKey, model: fallback.model)
        }
        return resilience
    }

    /// The user's home folder: `$HOME` when it is set to an absolute path (as a container, a test
    /// or `sudo -H` may set it), else the password database's.
    public static func homeDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let home = environment["HOME"], home.hasPrefix("/") { return URL(fileURLWithPath: home).standardizedFileURL.path }
        return FileManager.default.homeDirectoryForCurrentUser.standardizedFileURL.path
    }

    /// The default model API root.
    public static let defaultBaseURL = "https://api.openai.com/v1"

    /// The primary endpoint of a run: its journaled model and base URL, with this process's key.
    public func endpoint(for configuration: RunConfiguration) -> ModelEndpoint {
        ModelEndpoint(baseURL: configuration.baseURL ?? Self.defaultBaseURL, apiKey: apiKey, model: configuration.model)
    }

    /// Reads the settings.
    ///
    /// - Parameters:
    ///   - file: `--config`; without it `$TROUPE_CONFIG`, else `troupe.yaml` in `directory` if
    ///     there is one. A file named by `--config` or `$TROUPE_CONFIG` must exist.
    ///   - overrides: `--set KEY=VALUE` arguments, strongest first in precedence.
    ///   - readingImplicitFile: whether `troupe.yaml` in `directory` is read when no file is named.
    public static func load(
        file: String? = nil,
        overrides: [String] = [],
        environment: [String: String] = ProcessInfo.processInfo.environment,
        directory: String = FileManager.default.currentDirectoryPath,
        readingImplicitFile: Bool = true
    ) async throws(TroupeError) -> TroupeSettings {
        let environment = environment.filter { !$0.value.isEmpty }
        let named = file != nil || environment["TROUPE_CONFIG"] != nil
        let path = named || readingImplicitFile ? try configurationFile(file, environment: environment, directory: directory) : nil
        let fileValues = try path.map(SettingsFile.values(in:)) ?? [:]
        let flagValues = try SettingOverrides.parse(overrides)
        // An empty file (or one of comments) has no settings, and no mapping for the file provider.
        let reader = try await SettingsReader(
            flags: flagValues, environment: environment, file: fileValues.isEmpty ? nil : path, fileKeys: Set(fileValues.keys),
            directory: directory)
        var settings = try reader.settings()
        settings.file = path
        for secret in settings.secrets { Redactor.shared.register(secret) }
        return settings
    }

    /// The secrets these settings hold, which the ``Redactor`` masks wherever text leaves the
    /// process: model API keys, the store's password, and MCP servers' headers and variables
    /// whose values came from `${NAME}` (variables only when their name says they hold one:
    /// `KEY`, `TOKEN`, `SECRET`, `PASSWORD`, `PASS`, `AUTH`, `CREDENTIAL`).
    public var secrets: [String] {
        var found = [apiKey].compactMap { $0 } + fallbacks.compactMap(\.apiKey)
        if let store, let password = URLComponents(string: store)?.password { found.append(password) }
        for server in mcpServers {
            let values: [(String, String)]
            switch server.transport {
            case .stdio(_, _, let environment, _):
                let secretNames = ["KEY", "TOKEN", "SECRET", "PASS", "PWD", "PAT", "AUTH", "CREDENTIAL", "PRIVATE", "DSN"]
                values = environment.filter { variable in secretNames.contains { variable.key.uppercased().contains($0) } }
                    .map { ("env.\($0.key)", $0.value) }
            case .http(_, let headers): values = headers.map { ("headers.\($0.key)", $0.value) }
            }
            // A URL's password, whatever the variable is called (`DATABASE_URL`).
            if case .stdio(_, _, let environment, _) = server.transport {
                found += environment.values.compactMap { URLComponents(string: $0)?.password }
            }
            for (name, value) in values where server.templates[name].map({ $0 != value }) ?? false {
                found.append(value)
                // A header's token without its scheme (`Bearer …`), as it may appear alone.
                if let space = value.firstIndex(of: " ") { found.append(String(value[value.index(after: space)...])) }
            }
        }
        return found
    }

    /// `troupe.yaml` in `directory` when no settings file is named (`file`, `TROUPE_CONFIG`) and
    /// there is one: the file a command reads without being told to.
    public static func implicitFile(
        named file: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        directory: String = FileManager.default.currentDirectoryPath
    ) -> String? {
        guard file == nil, (environment["TROUPE_CONFIG"] ?? "").isEmpty else { return nil }
        let path = (directory as NSString).appendingPathComponent("troupe.yaml")
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    private static func configurationFile(
        _ explicit: String?,
        environment: [String: String],
        directory: String
    ) throws(TroupeError) -> String? {
        let named = explicit ?? environment["TROUPE_CONFIG"]
        let candidate = named ?? (directory as NSString).appendingPathComponent("troupe.yaml")
        let path = URL(fileURLWithPath: candidate, relativeTo: URL(fileURLWithPath: directory, isDirectory: true)).standardizedFileURL.path
        guard FileManager.default.fileExists(atPath: path) else {
            guard let named else { return nil }
            let source = explicit != nil ? "--config" : "TROUPE_CONFIG"
            throw TroupeError(.configuration, "The configuration file \(named) (from \(source)) does not exist.")
        }
        return path
    }

    /// The URL without `user:password@`, so that it can be journaled and printed.
    public static func withoutCredentials(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.user != nil || components.password != nil else { return url }
        components.user = nil
        components.password = nil
        return components.string ?? url
    }
}

/// `--set KEY=VALUE` arguments, typed by their key.
enum SettingOverrides {
    static func parse(_ arguments: [String]) throws(TroupeError) -> [String: ConfigValue] {
        var values: [String: ConfigValue] = [:]
        for argument in arguments {
            guard let equals = argument.firstIndex(of: "=") else {
                throw TroupeError(.configuration, "--set takes KEY=VALUE (got '\(argument)'), e.g. --set model.retry.maxAttempts=5.")
            }
            let name = String(argument[..<equals]).trimmingCharacters(in: .whitespaces)
            let text = String(argument[argument.index(after: equals)...])
            let key = try SettingsFile.known(name, from: "--set")
            let content: ConfigContent
            switch key.kind {
            case .string: content = .string(text)
            case .int:
                guard let value = Int(text) else { throw SettingsReader.wrongType(name, key.kind, "--set", text) }
                content = .int(value)
            case .double:
                guard let value = Double(text), value.isFinite else { throw SettingsReader.wrongType(name, key.kind, "--set", text) }
                content = .double(value)
            case .bool:
                guard let value = Bool(text.lowercased()) else { throw SettingsReader.wrongType(name, key.kind, "--set", text) }
                content = .bool(value)
            case .stringArray:
                content = .stringArray(text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
            }
            values[name] = ConfigValue(content, isSecret: false)
        }
        return values
    }
}

/// The keys of `troupe.yaml`, checked against ``SettingKeys``.
enum SettingsFile {
    /// The file's settings as dotted keys, with their YAML nodes.
    static func values(in path: String) throws(TroupeError) -> [String: Node] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw TroupeError(.configuration, "Could not read the configuration file \(path): \(error.localizedDescription)")
        }
        let document: Node?
        do {
            document = try Yams.compose(yaml: text)
        } catch {
            throw TroupeError(.configuration, "The configuration file \(path) is not valid YAML: \(error)")
        }
        guard let document, document != Node("") else { return [:] }
        guard let root = document.mapping else {
            throw TroupeError(.configuration, "The configuration file \(path) must hold a mapping of settings (e.g. `model:`).")
        }
        var values: [String: Node] = [:]
        func flatten(_ mapping: Node.Mapping, prefix: String) throws(TroupeError) {
            for (name, value) in mapping {
                let key = prefix.isEmpty ? (name.string ?? "") : prefix + "." + (name.string ?? "")
                if let nested = value.mapping {
                    try flatten(nested, prefix: key)
                    continue
                }
                let setting = try known(key, from: path)
                if value.sequence != nil, setting.kind != .stringArray {
                    throw TroupeError(.configuration, "Setting \(key) in \(path) is a list; it must be \(setting.kind.rawValue).")
                }
                values[key] = value
            }
        }
        try flatten(root, prefix: "")
        return values
    }

    /// The key called `name`, or an error that says what is wrong with it.
    static func known(_ name: String, from source: String) throws(TroupeError) -> SettingKeys.Key {
        guard let key = SettingKeys.key(named: name) else {
            let suggestion = SettingKeys.namesAndSections.min { distance($0, name) < distance($1, name) }
            let hint = suggestion.flatMap { distance($0, name) <= max(2, name.count / 4) ? " Did you mean '\($0)'?" : nil } ?? ""
            throw TroupeError(
                .configuration, "Unknown setting '\(name)' in \(source).\(hint) The settings are listed in docs/CONFIGURATION.md.")
        }
        if key.environmentOnly {
            throw TroupeError(
                .configuration,
                "\(source) sets \(name): API keys are read from the environment only (\(key.environment), or the variable "
                    + "model.apiKeyEnv names), so that they stay out of files and shell history.")
        }
        return key
    }

    /// Edit distance, for suggestions.
    private static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a.lowercased())
        let b = Array(b.lowercased())
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return row[b.count]
    }
}

/// `log.*`: how the process logs (the command line's `--log-format` and `--log-level` win).
public struct LogSettings: Sendable, Hashable {
    /// `log.format`: `json` or `text`; `nil`: the command's default (`json` for `serve` and
    /// `worker`, `text` for the others).
    public var format: LogFormat?
    /// `log.level`: the level of every logger without one of its own; `nil`: the command's default.
    public var level: Logger.Level?
    /// `log.levels`: levels per logger label (`troupe.mcp=debug`), a label covering those below it.
    public var levels: [String: Logger.Level] = [:]

    public init() {}
}

/// `worker.*`: how a worker claims, drives and drains runs.
public struct WorkerSettings: Sendable, Hashable {
    /// The most runs driven at once (`worker.concurrency`, `--concurrency`).
    public var concurrency = 8
    /// Seconds a drain waits for the runs in hand to reach a point where nothing is in flight
    /// before cancelling them (`worker.drainTimeout`).
    public var drainTimeoutSeconds = 30.0
    /// Seconds between looks for claimable runs when no announcement came (`worker.pollInterval`).
    public var pollIntervalSeconds = 5.0
    /// Failed drives in a row after which a run is left for an operator (`worker.maxAttempts`).
    public var maxAttempts = 5
    /// Seconds a run's lease lasts without renewal (renewed every third of it): how long a run
    /// waits after its worker died or froze before another takes it over (`worker.leaseDuration`).
    public var leaseDurationSeconds = 30.0
    /// Runs of one tenant driven at once across every worker of the store, by tenant
    /// (`tenants.NAME.maxConcurrentRuns`; 0 holds a tenant's runs back).
    public var maxConcurrentRuns: [String: Int] = [:]
    /// The same for tenants not named there (`worker.maxConcurrentRunsPerTenant`; none by default).
    public var maxConcurrentRunsPerTenant: Int?

    public init() {}
}

/// `server.*`: what callers of `troupe serve` may choose. They never choose an endpoint, a key
/// or a path.
public struct ServerSettings: Sendable, Hashable {
    /// The folder under which each run created through the API gets its own workspace
    /// (`server.workspaceRoot`; default `~/.troupe/workspaces`).
    public var workspaceRoot: String?
    /// The tool groups a request may ask for (`server.allowedTools`; default `fs`).
    public var allowedTools = ["fs"]
    /// The models a request may name besides the default (`server.models`).
    public var models: [String] = []
    /// Requests a second one key may send (`server.rateLimit.perKey`; 0: no limit), and at once (`perKeyBurst`).
    public var requestsPerKey = 20.0
    public var requestBurstPerKey = 40
    /// Requests a second all of a tenant's keys may send (`server.rateLimit.perTenant`; 0: no limit), and at once.
    public var requestsPerTenant = 50.0
    public var requestBurstPerTenant = 100
    /// Event streams one key may hold open at once (`server.maxStreamsPerKey`).
    public var maxStreamsPerKey = 16
    /// The most steps a plan of a tenant's runs may have (`tenants.NAME.maxSteps`), by tenant.
    public var maxStepsByTenant: [String: Int] = [:]
    /// The longest tool output a tenant's runs send their model (`tenants.NAME.maxToolOutputCharacters`), by tenant.
    public var maxToolOutputCharactersByTenant: [String: Int] = [:]

    public init() {}
}
