import Configuration
import Foundation
import Logging
import SystemPackage
import Troupe
import TroupeCore

/// Reads typed, range-checked settings through one `ConfigReader` whose providers are, strongest
/// first: `--set`, the environment, `troupe.yaml`.
struct SettingsReader {
    private let reader: ConfigReader
    private let fileOnlyReader: ConfigReader
    private let flags: [String: ConfigValue]
    private let environment: [String: String]
    private let file: String?
    private let fileKeys: Set<String>
    private let directory: String

    init(
        flags: [String: ConfigValue],
        environment: [String: String],
        file: String?,
        fileKeys: Set<String>,
        directory: String
    ) async throws(TroupeError) {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for (name, value) in flags { values[Self.key(name)] = value }
        let secrets = Set(SettingKeys.all.filter(\.isSecret).map(\.environment))
        let variables = EnvironmentVariablesProvider(environmentVariables: environment, secretsSpecifier: .specific(secrets))
        // Each key is looked up under its own variable name (OPENAI_API_KEY, TROUPE_MODEL_RETRY_…).
        let environmentProvider = KeyMappingProvider(upstream: variables) { key in
            AbsoluteConfigKey([Self.environmentName(of: key.components.joined(separator: ".")).lowercased()])
        }
        let flagsProvider = InMemoryProvider(name: "--set", values: values)
        var fileProviders: [any ConfigProvider] = []
        if let file {
            do {
                fileProviders.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(file)))
            } catch {
                throw TroupeError(.configuration, "Could not read the configuration file \(file): \(error)")
            }
        }
        self.reader = ConfigReader(providers: [flagsProvider, environmentProvider] + fileProviders)
        // Keys the environment may not set are read without it (see `isFileOnly`).
        self.fileOnlyReader = ConfigReader(providers: [flagsProvider] + fileProviders)
        self.flags = flags
        self.environment = environment
        self.file = file
        self.fileKeys = fileKeys
        self.directory = directory
    }

    private static func key(_ name: String) -> AbsoluteConfigKey {
        AbsoluteConfigKey(name.split(separator: ".").map(String.init))
    }

    static func environmentName(of name: String) -> String {
        SettingKeys.key(named: name)?.environment ?? SettingKeys.environmentName(name)
    }

    /// Keys only the file and `--set` give (docs/CONFIGURATION.md says "file or `--set` only"):
    /// an MCP server is a program to start and a tool's limits are per name, which an inherited
    /// variable should not change behind the file's back.
    static func isFileOnly(_ name: String) -> Bool {
        ["mcp.servers.", "tools.limits.", "tenants."].contains { name.hasPrefix($0) }
    }

    /// Where `name` is set — `--set`, the variable's name, or the file — or `nil` if nowhere.
    func source(of name: String) -> String? {
        if flags[name] != nil { return "--set" }
        let variable = Self.environmentName(of: name)
        if !Self.isFileOnly(name), environment[variable] != nil { return variable }
        if fileKeys.contains(name), let file { return file }
        return nil
    }

    static func wrongType(_ name: String, _ kind: SettingKeys.Kind, _ source: String, _ text: String?) -> TroupeError {
        let got = text.map { " (got '\($0)')" } ?? ""
        return TroupeError(.configuration, "Setting \(name) from \(source) must be \(kind.rawValue)\(got).")
    }

    private func value<T>(_ name: String, _ get: (ConfigReader, ConfigKey, Bool) throws -> T) throws(TroupeError) -> T? {
        guard let source = source(of: name) else { return nil }
        let key = SettingKeys.key(named: name)
        do {
            let reader = Self.isFileOnly(name) ? fileOnlyReader : reader
            return try get(reader, ConfigKey(name.split(separator: ".").map(String.init)), key?.isSecret ?? false)
        } catch {
            // The value is quoted only when it came from a variable, and never a secret's.
            let variable = Self.environmentName(of: name)
            let shown = source == variable && !(key?.isSecret ?? false) ? environment[variable] : nil
            throw Self.wrongType(name, key?.kind ?? .string, source, shown)
        }
    }

    func string(_ name: String) throws(TroupeError) -> String? {
        try value(name) { try $0.requiredString(forKey: $1, isSecret: $2) }
    }

    /// A list, given as a list or as one comma-separated string (`tools: none`, `fs,web`).
    func strings(_ name: String) throws(TroupeError) -> [String]? {
        try value(name) { reader, key, isSecret in
            do {
                return try reader.requiredStringArray(forKey: key, isSecret: isSecret)
            } catch {
                let text = try reader.requiredString(forKey: key, isSecret: isSecret)
                return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
        }
    }

    func bool(_ name: String) throws(TroupeError) -> Bool? {
        try value(name) { try $0.requiredBool(forKey: $1, isSecret: $2) }
    }

    func int(_ name: String, in range: ClosedRange<Int>) throws(TroupeError) -> Int? {
        guard let number = try value(name, { try $0.requiredInt(forKey: $1, isSecret: $2) }) else { return nil }
        guard range.contains(number) else {
            throw outOfRange(name, "between \(range.lowerBound) and \(range.upperBound)", "\(number)")
        }
        return number
    }

    /// A number of seconds (or a rate) in `range`; `openBelow` excludes the lower bound.
    func double(_ name: String, in range: ClosedRange<Double>, openBelow: Bool = false) throws(TroupeError) -> Double? {
        guard let number = try value(name, { try $0.requiredDouble(forKey: $1, isSecret: $2) }) else { return nil }
        guard range.contains(number), !(openBelow && number == range.lowerBound) else {
            let bound = openBelow ? "above \(Self.format(range.lowerBound))" : "at least \(Self.format(range.lowerBound))"
            throw outOfRange(name, "\(bound) and at most \(Self.format(range.upperBound))", Self.format(number))
        }
        return number
    }

    private func outOfRange(_ name: String, _ rule: String, _ got: String) -> TroupeError {
        TroupeError(.configuration, "Setting \(name) from \(source(of: name) ?? "the defaults") must be \(rule) (got \(got)).")
    }

    private static func format(_ number: Double) -> String {
        number == number.rounded() && abs(number) < 1e15 ? String(Int(number)) : String(number)
    }

    /// A path setting: relative to the file's folder when it came from the file, else to the
    /// working directory.
    func path(_ name: String) throws(TroupeError) -> String? {
        try string(name).map { resolved($0, setting: name) }
    }

    /// A list of paths, each resolved as ``path(_:)`` resolves one.
    func paths(_ name: String) throws(TroupeError) -> [String]? {
        try strings(name)?.map { resolved($0, setting: name) }
    }

    /// `text` as an absolute path: `~/` is the home folder, and a relative path is relative to
    /// the settings file that gave it (else to the current directory).
    private func resolved(_ text: String, setting name: String) -> String {
        let base = source(of: name) == file ? (file.map { ($0 as NSString).deletingLastPathComponent } ?? directory) : directory
        let expanded = text.hasPrefix("~/") ? TroupeSettings.homeDirectory(environment: environment) + text.dropFirst(1) : text
        return URL(fileURLWithPath: expanded, relativeTo: URL(fileURLWithPath: base, isDirectory: true)).standardizedFileURL.path
    }

    // MARK: - The settings

    func settings() throws(TroupeError) -> TroupeSettings {
        // Read before the settings value exists: a TroupeError thrown in this function after it
        // was made crashed the process (Swift 6.3, typed throws), where one thrown before does not.
        let apiKey = try primaryAPIKey()
        var settings = TroupeSettings(store: try store())
        settings.runDefaults = try runDefaults()
        settings.apiKey = apiKey
        settings.resilience = try resilience()
        settings.fallbacks = try fallbacks()
        settings.shellPolicy = try shellPolicy()
        settings.webPolicy = try webPolicy()
        if let patterns = try strings("tools.fs.protectedPaths") {
            for pattern in patterns {
                if let problem = ProtectedPaths.problem(with: pattern) {
                    throw TroupeError(
                        .configuration,
                        "Setting tools.fs.protectedPaths from \(source(of: "tools.fs.protectedPaths") ?? "the defaults"): \(problem).")
                }
            }
            // Added to the defaults, never instead of them.
            settings.protectedPaths.patterns += patterns.filter { !settings.protectedPaths.patterns.contains($0) }
        }
        settings.toolPolicy = try toolPolicy()
        settings.mcpServers = try mcpServers()
        settings.worker = try worker()
        settings.server = try server()
        settings.log = try log()
        settings.prices = try prices()
        return settings
    }

    /// `prices`: `MODEL=INPUT/CACHED/OUTPUT` entries, US dollars per million tokens.
    private func prices() throws(TroupeError) -> PriceTable {
        var prices: [String: ModelPrice] = [:]
        for entry in try strings("prices") ?? [] {
            let parts = entry.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, let price = ModelPrice(text: parts[1]) else {
                throw outOfRange(
                    "prices", "MODEL=INPUT/CACHED/OUTPUT entries in US dollars per million tokens (e.g. gpt-4o=2.50/1.25/10)", entry)
            }
            prices[parts[0]] = price
        }
        return PriceTable.builtIn.merging(prices, source: "the prices setting")
    }

    private func log() throws(TroupeError) -> LogSettings {
        var log = LogSettings()
        if let text = try string("log.format") {
            guard let format = LogFormat(rawValue: text) else { throw outOfRange("log.format", "json or text", text) }
            log.format = format
        }
        let levels = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
        if let text = try string("log.level") {
            guard let level = Logger.Level(rawValue: text) else { throw outOfRange("log.level", levels, text) }
            log.level = level
        }
        for entry in try strings("log.levels") ?? [] {
            let parts = entry.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, let level = Logger.Level(rawValue: parts[1]) else {
                throw outOfRange("log.levels", "LOGGER=LEVEL entries (e.g. troupe.mcp=debug; levels: \(levels))", entry)
            }
            log.levels[parts[0]] = level
        }
        return log
    }

    private func server() throws(TroupeError) -> ServerSettings {
        var server = ServerSettings()
        server.workspaceRoot = try path("server.workspaceRoot")
        if let tools = try strings("server.allowedTools") {
            let entries = tools == ["none"] ? [] : tools
            for entry in entries where (try? ToolSelection(entry)) == nil {
                throw outOfRange("server.allowedTools", ToolSelection.accepted + ", or none", entry)
            }
            server.allowedTools = entries
        }
        if let models = try strings("server.models") { server.models = models }
        if let value = try double("server.rateLimit.perKey", in: 0...100_000) { server.requestsPerKey = value }
        if let value = try int("server.rateLimit.perKeyBurst", in: 1...1_000_000) { server.requestBurstPerKey = value }
        if let value = try double("server.rateLimit.perTenant", in: 0...100_000) { server.requestsPerTenant = value }
        if let value = try int("server.rateLimit.perTenantBurst", in: 1...1_000_000) { server.requestBurstPerTenant = value }
        if let value = try int("server.maxStreamsPerKey", in: 1...100_000) { server.maxStreamsPerKey = value }
        for name in names(under: "tenants.") {
            if let value = try int("tenants.\(name).maxSteps", in: 1...100) { server.maxStepsByTenant[name] = value }
            if let value = try int("tenants.\(name).maxToolOutputCharacters", in: 100...100_000_000) {
                server.maxToolOutputCharactersByTenant[name] = value
            }
        }
        return server
    }

    private func worker() throws(TroupeError) -> WorkerSettings {
        var worker = WorkerSettings()
        if let value = try int("worker.concurrency", in: 1...1000) { worker.concurrency = value }
        if let value = try double("worker.drainTimeout", in: 0...3600) { worker.drainTimeoutSeconds = value }
        if let value = try double("worker.pollInterval", in: 0.05...3600) { worker.pollIntervalSeconds = value }
        if let value = try int("worker.maxAttempts", in: 1...100) { worker.maxAttempts = value }
        if let value = try double("worker.leaseDuration", in: 1...3600) { worker.leaseDurationSeconds = value }
        if let value = try int("worker.maxConcurrentRunsPerTenant", in: 1...100_000) { worker.maxConcurrentRunsPerTenant = value }
        for name in names(under: "tenants.") {
            do throws(TroupeError) {
                _ = try TenantName.validated(name)
            } catch {
                throw TroupeError(.configuration, "tenants.\(name): \(error.message)")
            }
            if let value = try int("tenants.\(name).maxConcurrentRuns", in: 0...100_000) { worker.maxConcurrentRuns[name] = value }
        }
        return worker
    }

    /// `store`; a relative SQLite path in the file is relative to the file's folder (as `cwd`
    /// and `run.workspace` are), not to wherever the command runs.
    private func store() throws(TroupeError) -> String? {
        guard let text = try string("store"), source(of: "store") == file, let file else { return try string("store") }
        let scheme = ["sqlite://", "sqlite:"].first { text.hasPrefix($0) }
        guard scheme != nil || !text.contains("://") else { return text }
        let path = String(text.dropFirst(scheme?.count ?? 0))
        guard !path.isEmpty, !path.hasPrefix("/"), !path.hasPrefix("~") else { return text }
        let folder = URL(fileURLWithPath: (file as NSString).deletingLastPathComponent, isDirectory: true)
        return "sqlite:" + URL(fileURLWithPath: path, relativeTo: folder).standardizedFileURL.path
    }

    private func runDefaults() throws(TroupeError) -> RunConfiguration {
        var run = RunConfiguration(workspace: directory)
        if let model = try string("model.name") {
            guard !model.isEmpty else { throw outOfRange("model.name", "a model name", "nothing") }
            run.model = model
        }
        if let url = try string("model.baseURL") { run.baseURL = TroupeSettings.withoutCredentials(url) }
        if let workspace = try path("run.workspace") { run.workspace = workspace }
        if let tools = try strings("run.tools") {
            run.tools = tools == ["none"] ? [] : tools
            for entry in run.tools where (try? ToolSelection(entry)) == nil {
                throw outOfRange("run.tools", ToolSelection.accepted + ", or none", entry)
            }
        }
        if let value = try int("run.maxSteps", in: 1...100) { run.maxSteps = value }
        if let value = try int("run.maxConcurrency", in: 1...64) { run.maxConcurrentSteps = value }
        if let value = try int("run.maxIterations", in: 1...100) { run.maxIterations = value }
        if let value = try double("run.stepTimeout", in: 0...86_400, openBelow: true) { run.stepTimeoutSeconds = value }
        if let value = try int("run.maxTokens", in: 1...10_000_000) { run.maxTokens = value }
        if let value = try bool("run.stream") { run.stream = value }
        return run
    }

    private func resilience() throws(TroupeError) -> ModelResilience {
        var resilience = ModelResilience()
        let seconds = 0.0...86_400
        if let value = try double("model.timeouts.connect", in: seconds, openBelow: true) { resilience.timeouts.connectSeconds = value }
        if let value = try double("model.timeouts.firstByte", in: seconds, openBelow: true) { resilience.timeouts.firstByteSeconds = value }
        if let value = try double("model.timeouts.idle", in: seconds, openBelow: true) { resilience.timeouts.idleSeconds = value }
        if let value = try double("model.timeouts.total", in: seconds, openBelow: true) { resilience.timeouts.totalSeconds = value }

        if let value = try int("model.retry.maxAttempts", in: 1...100) { resilience.retry.maxAttempts = value }
        if let value = try double("model.retry.initialBackoff", in: 0...3_600) { resilience.retry.initialBackoffSeconds = value }
        if let value = try double("model.retry.maxBackoff", in: 0...3_600) { resilience.retry.maxBackoffSeconds = value }
        if let value = try double("model.retry.maxRetryAfter", in: 0...3_600) { resilience.retry.maxRetryAfterSeconds = value }
        if let value = try double("model.retry.deadline", in: seconds, openBelow: true) { resilience.retry.deadlineSeconds = value }
        guard resilience.retry.maxBackoffSeconds >= resilience.retry.initialBackoffSeconds else {
            throw TroupeError(
                .configuration,
                "Setting model.retry.maxBackoff (\(resilience.retry.maxBackoffSeconds) s) must be at least model.retry.initialBackoff "
                    + "(\(resilience.retry.initialBackoffSeconds) s).")
        }

        resilience.rateLimits.requestsPerMinute = try int("model.rateLimits.requestsPerMinute", in: 1...10_000_000)
        resilience.rateLimits.tokensPerMinute = try int("model.rateLimits.tokensPerMinute", in: 1...1_000_000_000)

        if try bool("model.circuitBreaker.enabled") == false {
            resilience.circuitBreaker = nil
        } else {
            var policy = CircuitBreaker.Policy()
            if let value = try int("model.circuitBreaker.consecutiveFailures", in: 1...1_000) { policy.consecutiveFailures = value }
            if let value = try double("model.circuitBreaker.failureRate", in: 0...1, openBelow: true) { policy.failureRate = value }
            if let value = try int("model.circuitBreaker.window", in: 1...10_000) { policy.window = value }
            if let value = try int("model.circuitBreaker.minimumCalls", in: 1...10_000) { policy.minimumCalls = value }
            if let value = try double("model.circuitBreaker.coolDown", in: 0...86_400) { policy.coolDownSeconds = value }
            if let value = try int("model.circuitBreaker.probes", in: 1...100) { policy.probes = value }
            resilience.circuitBreaker = policy
        }
        return resilience
    }

    private func shellPolicy() throws(TroupeError) -> ShellPolicy {
        var policy = ShellPolicy()
        if let programs = try strings("tools.shell.allowedPrograms") {
            for program in programs where program.isEmpty || program.contains("/") {
                throw TroupeError(
                    .configuration,
                    "Setting tools.shell.allowedPrograms from \(source(of: "tools.shell.allowedPrograms") ?? "") "
                        + "lists '\(program)'; give program names (looked up in /usr/local/bin, /usr/bin, /bin), not paths.")
            }
            policy.allowedExecutables = Set(programs)
        }
        if let scripts = try bool("tools.shell.allowScripts") { policy.allowShellScripts = scripts }
        if let seconds = try double("tools.shell.maxTimeout", in: 0...86_400, openBelow: true) {
            policy.maxTimeout = .seconds(seconds)
            policy.defaultTimeout = min(policy.defaultTimeout, policy.maxTimeout)
        }
        if let bytes = try int("tools.shell.maxOutputBytes", in: 1...(64 << 20)) { policy.maxOutputBytes = bytes }
        if let text = try string("tools.shell.sandbox") {
            guard let mode = SandboxMode(rawValue: text) else {
                throw outOfRange("tools.shell.sandbox", "auto, bwrap or none", text)
            }
            policy.sandboxMode = mode
        }
        if let network = try bool("tools.shell.network") { policy.network = network }
        // bwrap and its init take a few processes of the count themselves.
        if let count = try int("tools.shell.maxProcesses", in: 8...1_000_000) { policy.limits.processes = count }
        if let bytes = try int("tools.shell.maxFileBytes", in: 1...(1 << 50)) { policy.limits.fileBytes = bytes }
        if let bytes = try int("tools.shell.maxMemoryBytes", in: (16 << 20)...(1 << 50)) { policy.limits.addressSpaceBytes = bytes }
        if let count = try int("tools.shell.maxOpenFiles", in: 16...1_048_576) { policy.limits.openFiles = count }
        return policy
    }

    private func webPolicy() throws(TroupeError) -> WebFetchPolicy {
        var policy = WebFetchPolicy()
        if let hosts = try strings("tools.web.allowedPrivateHosts") { policy.allowedPrivateHosts = Set(hosts.map { $0.lowercased() }) }
        if let bytes = try int("tools.web.maxBytes", in: 1...(256 << 20)) { policy.maxBytes = bytes }
        if let seconds = try double("tools.web.timeout", in: 0...3_600, openBelow: true) { policy.timeout = .seconds(seconds) }
        if let redirects = try int("tools.web.maxRedirects", in: 0...20) { policy.maxRedirects = redirects }
        return policy
    }

    /// `tools.allow`/`deny`/`requireApproval`, and `tools.limits.NAME.*` for each NAME the file or
    /// `--set` gives (limits are not read from the environment: their names are not known).
    private func toolPolicy() throws(TroupeError) -> ToolPolicy {
        var policy = ToolPolicy(
            allow: try strings("tools.allow") ?? [], deny: try strings("tools.deny") ?? [],
            requireApproval: try strings("tools.requireApproval") ?? [])
        for name in names(under: "tools.limits.") {
            let prefix = "tools.limits.\(name)."
            var decision: ApprovalVerdict?
            if let text = try string(prefix + "approvalTimeoutDecision") {
                guard let verdict = ApprovalVerdict(rawValue: text), verdict != .edit else {
                    throw TroupeError(.configuration, "\(prefix)approvalTimeoutDecision must be approve or deny, not '\(text)'.")
                }
                decision = verdict
            }
            policy.limits[name] = ToolLimits(
                maxCallsPerRun: try int(prefix + "maxCallsPerRun", in: 0...1_000_000),
                timeoutSeconds: try double(prefix + "timeout", in: 0...86_400, openBelow: true),
                approvalTimeoutSeconds: try double(prefix + "approvalTimeout", in: 0...(366 * 86_400), openBelow: true),
                approvalTimeoutDecision: decision)
        }
        return policy
    }

    /// The names under `prefix` (e.g. `tools.limits.`) in the keys the file and `--set` give; the
    /// environment cannot introduce one (its variable names do not say where a name ends).
    private func names(under prefix: String) -> [String] {
        let keys = fileKeys.union(flags.keys).filter { $0.hasPrefix(prefix) }
        return Set(keys.compactMap { $0.dropFirst(prefix.count).split(separator: ".").first.map(String.init) }).sorted()
    }

    /// `mcp.servers.NAME.*`: a `command` (with `args`, `env`, `cwd`) or a `url` (with `headers`).
    private func mcpServers() throws(TroupeError) -> [MCPServerConfiguration] {
        try names(under: "mcp.servers.").map { name throws(TroupeError) in
            let prefix = "mcp.servers.\(name)."
            let transport: MCPServerConfiguration.Transport
            switch (try string(prefix + "command"), try string(prefix + "url")) {
            case (let command?, nil):
                transport = .stdio(
                    command: command, arguments: try strings(prefix + "args") ?? [],
                    environment: try expandedMap(prefix + "env."), workingDirectory: try path(prefix + "cwd"))
            case (nil, let url?):
                transport = .http(url: url, headers: try expandedMap(prefix + "headers."))
            case (.some, .some):
                throw TroupeError(.configuration, "MCP server '\(name)' sets both command and url; give one.")
            case (nil, nil):
                throw TroupeError(
                    .configuration, "MCP server '\(name)' needs a command (a program to start) or a url (a streamable HTTP endpoint).")
            }
            var server = MCPServerConfiguration(name: name, transport: transport)
            if let seconds = try double(prefix + "timeout", in: 0...86_400, openBelow: true) { server.callTimeout = .seconds(seconds) }
            if let seconds = try double(prefix + "startupTimeout", in: 0...3_600, openBelow: true) {
                server.startupTimeout = .seconds(seconds)
            }
            if let tools = try strings(prefix + "readOnlyTools") { server.readOnlyTools = tools }
            if let tools = try strings(prefix + "idempotentTools") { server.idempotentTools = tools }
            if let restarts = try int(prefix + "maxRestarts", in: 0...1_000) { server.maxRestarts = restarts }
            let sandboxing = MCPServerConfiguration.Sandboxing(
                network: try bool(prefix + "network") ?? false, readOnlyPaths: try paths(prefix + "readOnlyPaths") ?? [],
                writablePaths: try paths(prefix + "writablePaths") ?? [])
            if try bool(prefix + "sandbox") == true {
                server.sandbox = sandboxing
            } else if sandboxing != MCPServerConfiguration.Sandboxing() {
                throw TroupeError(
                    .configuration,
                    "MCP server '\(name)': network, readOnlyPaths and writablePaths are sandbox settings; set sandbox: true.")
            }
            for key in names(under: prefix + "env.").map({ "env." + $0 }) + names(under: prefix + "headers.").map({ "headers." + $0 }) {
                if let text = try string(prefix + key) { server.templates[key] = text }
            }
            try server.validate()
            return server
        }
    }

    /// The text settings under `prefix` (an MCP server's `env.` or `headers.`), with `${VARIABLE}`
    /// replaced by the variable's value, so that tokens stay in the environment, out of the file.
    private func expandedMap(_ prefix: String) throws(TroupeError) -> [String: String] {
        var map: [String: String] = [:]
        for name in names(under: prefix) {
            guard let text = try string(prefix + name) else { continue }
            let value = try expandVariables(in: text, setting: prefix + name)
            // Header values are secrets more often than not (tokens).
            map[name] = prefix.hasSuffix("headers.") ? try SecretText.cleaned(value, source: "setting \(prefix + name)") : value
        }
        return map
    }

    private func expandVariables(in text: String, setting: String) throws(TroupeError) -> String {
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                throw TroupeError(.configuration, "Setting \(setting) has a '${' without its '}'.")
            }
            let variable = String(rest[start.upperBound..<end])
            guard let value = environment[variable] else {
                throw TroupeError(
                    .configuration, "Setting \(setting) uses ${\(variable)}, and the environment variable \(variable) is not set.")
            }
            result += value
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }

    /// The primary model's key: from the variable `model.apiKeyEnv` names, else `OPENAI_API_KEY`.
    private func primaryAPIKey() throws(TroupeError) -> String? {
        if let variable = try string("model.apiKeyEnv") {
            guard let value = environment[variable] else { return nil }
            return try SecretText.cleaned(value, source: "the environment variable \(variable)")
        }
        guard let value = try string("model.apiKey") else { return nil }
        return try SecretText.cleaned(value, source: "the environment variable OPENAI_API_KEY")
    }

    /// `model.fallbacks`: each a name under `endpoints`, or a model name on the run's endpoint.
    private func fallbacks() throws(TroupeError) -> [TroupeSettings.Fallback] {
        try (strings("model.fallbacks") ?? []).map { name throws(TroupeError) in
            let prefix = "endpoints.\(name)."
            let baseURL = try string(prefix + "baseURL")
            let model = try string(prefix + "model")
            let variable = try string(prefix + "apiKeyEnv")
            // An endpoint that only names its key's variable is the run's endpoint with that key.
            guard baseURL != nil || model != nil || variable != nil else { return TroupeSettings.Fallback(model: name) }
            var apiKey: String?
            if let variable, let value = environment[variable] {
                apiKey = try SecretText.cleaned(value, source: "the environment variable \(variable)")
            }
            return TroupeSettings.Fallback(model: model ?? name, baseURL: baseURL, apiKey: apiKey, hasOwnKey: variable != nil)
        }
    }
}
