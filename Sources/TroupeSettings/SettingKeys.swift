/// Every setting Troupe reads, with its type and the environment variable that sets it: the
/// reference that `troupe.yaml`, the environment and `--set` are checked against.
public enum SettingKeys {
    public enum Kind: String, Sendable {
        case string = "text"
        case int = "a whole number"
        case double = "a number"
        case bool = "true or false"
        case stringArray = "a list of strings"
    }

    public struct Key: Sendable {
        /// The dotted key, e.g. `model.retry.maxAttempts` (in YAML, nested mappings).
        public var name: String
        public var kind: Kind
        /// The environment variable that sets it.
        public var environment: String
        /// Never printed or logged.
        public var isSecret = false
        /// Accepted from the environment only: secrets stay out of files.
        public var environmentOnly = false
    }

    /// The keys, in the order the docs list them.
    public static let all: [Key] = [
        key("store", .string, environment: "TROUPE_STORE"),
        key("model.name", .string, environment: "TROUPE_MODEL"),
        key("model.baseURL", .string, environment: "OPENAI_BASE_URL"),
        Key(name: "model.apiKey", kind: .string, environment: "OPENAI_API_KEY", isSecret: true, environmentOnly: true),
        key("model.apiKeyEnv", .string),
        key("model.fallbacks", .stringArray),
        key("model.timeouts.connect", .double),
        key("model.timeouts.firstByte", .double),
        key("model.timeouts.idle", .double),
        key("model.timeouts.total", .double),
        key("model.retry.maxAttempts", .int),
        key("model.retry.initialBackoff", .double),
        key("model.retry.maxBackoff", .double),
        key("model.retry.maxRetryAfter", .double),
        key("model.retry.deadline", .double),
        key("model.rateLimits.requestsPerMinute", .int),
        key("model.rateLimits.tokensPerMinute", .int),
        key("model.circuitBreaker.enabled", .bool),
        key("model.circuitBreaker.consecutiveFailures", .int),
        key("model.circuitBreaker.failureRate", .double),
        key("model.circuitBreaker.window", .int),
        key("model.circuitBreaker.minimumCalls", .int),
        key("model.circuitBreaker.coolDown", .double),
        key("model.circuitBreaker.probes", .int),
        key("run.workspace", .string),
        key("run.tools", .stringArray),
        key("run.maxSteps", .int),
        key("run.maxConcurrency", .int),
        key("run.maxIterations", .int),
        key("run.stepTimeout", .double),
        key("run.maxTokens", .int),
        key("run.stream", .bool),
        key("tools.fs.protectedPaths", .stringArray),
        key("tools.shell.allowedPrograms", .stringArray),
        key("tools.shell.allowScripts", .bool),
        key("tools.shell.maxTimeout", .double),
        key("tools.shell.maxOutputBytes", .int),
        key("tools.shell.sandbox", .string),
        key("tools.shell.network", .bool),
        key("tools.shell.maxProcesses", .int),
        key("tools.shell.maxFileBytes", .int),
        key("tools.shell.maxMemoryBytes", .int),
        key("tools.shell.maxOpenFiles", .int),
        key("tools.web.allowedPrivateHosts", .stringArray),
        key("tools.web.maxBytes", .int),
        key("tools.web.timeout", .double),
        key("tools.web.maxRedirects", .int),
        key("tools.allow", .stringArray),
        key("tools.deny", .stringArray),
        key("tools.requireApproval", .stringArray),
        key("prices", .stringArray),
        key("log.format", .string),
        key("log.level", .string),
        key("log.levels", .stringArray),
        key("worker.concurrency", .int),
        key("worker.drainTimeout", .double),
        key("worker.pollInterval", .double),
        key("worker.maxAttempts", .int),
        key("worker.leaseDuration", .double),
        key("worker.maxConcurrentRunsPerTenant", .int),
        key("server.workspaceRoot", .string),
        key("server.allowedTools", .stringArray),
        key("server.models", .stringArray),
        key("server.rateLimit.perKey", .double),
        key("server.rateLimit.perKeyBurst", .int),
        key("server.rateLimit.perTenant", .double),
        key("server.rateLimit.perTenantBurst", .int),
        key("server.maxStreamsPerKey", .int),
    ]

    /// A tenant's settings under `tenants.NAME.`.
    public static let tenantFields: [String: Kind] = ["maxConcurrentRuns": .int, "maxSteps": .int, "maxToolOutputCharacters": .int]

    /// The limits of a tool (or tool pattern) under `tools.limits.NAME.`.
    public static let toolLimitFields: [String: Kind] = [
        "maxCallsPerRun": .int, "timeout": .double, "approvalTimeout": .double, "approvalTimeoutDecision": .string,
    ]

    /// The settings of an MCP server under `mcp.servers.NAME.`; besides them, `env.VARIABLE` and
    /// `headers.HEADER` (text).
    public static let mcpServerFields: [String: Kind] = [
        "command": .string, "args": .stringArray, "cwd": .string, "url": .string, "timeout": .double, "startupTimeout": .double,
        "readOnlyTools": .stringArray, "idempotentTools": .stringArray, "maxRestarts": .int, "sandbox": .bool, "network": .bool,
        "readOnlyPaths": .stringArray, "writablePaths": .stringArray,
    ]

    /// The maps of an MCP server: `mcp.servers.NAME.env.VARIABLE`, `mcp.servers.NAME.headers.HEADER`.
    public static let mcpServerMaps: Set<String> = ["env", "headers"]

    /// The settings of a named endpoint under `endpoints.NAME.` (a fallback names it).
    public static let endpointFields: [String: Kind] = ["baseURL": .string, "model": .string, "apiKeyEnv": .string]

    /// The keys and the sections that hold them (`model`, `model.retry`, …): what a misspelt key
    /// is compared with.
    static var namesAndSections: [String] {
        var names = Set<String>()
        for key in all {
            var parts = key.name.split(separator: ".").map(String.init)
            while !parts.isEmpty {
                names.insert(parts.joined(separator: "."))
                parts.removeLast()
            }
        }
        return names.sorted()
    }

    /// The key called `name`, if there is one.
    public static func key(named name: String) -> Key? {
        if let key = all.first(where: { $0.name == name }) { return key }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 3, parts[0] == "endpoints", !parts[1].isEmpty, let kind = endpointFields[String(parts[2])] {
            return key(name, kind)
        }
        if parts.count == 4, parts[0] == "tools", parts[1] == "limits", !parts[2].isEmpty, let kind = toolLimitFields[String(parts[3])] {
            return key(name, kind)
        }
        if parts.count == 3, parts[0] == "tenants", !parts[1].isEmpty, let kind = tenantFields[String(parts[2])] {
            return key(name, kind)
        }
        if parts.count >= 4, parts[0] == "mcp", parts[1] == "servers", !parts[2].isEmpty {
            if parts.count == 4, let kind = mcpServerFields[String(parts[3])] { return key(name, kind) }
            if parts.count == 5, mcpServerMaps.contains(String(parts[3])), !parts[4].isEmpty { return key(name, .string) }
        }
        return nil
    }

    /// `TROUPE_` and the key in upper snake case: `model.retry.maxAttempts` →
    /// `TROUPE_MODEL_RETRY_MAX_ATTEMPTS`.
    static func environmentName(_ name: String) -> String {
        var result = "TROUPE_"
        var previous: Character = "."
        for character in name {
            if character == "." || character == "-" {
                result += "_"
            } else if character.isUppercase, previous.isLowercase {
                result += "_" + character.uppercased()
            } else {
                result += character.uppercased()
            }
            previous = character
        }
        return result
    }

    private static func key(_ name: String, _ kind: Kind, environment: String? = nil) -> Key {
        Key(name: name, kind: kind, environment: environment ?? environmentName(name))
    }
}
