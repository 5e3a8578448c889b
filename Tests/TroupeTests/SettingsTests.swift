import Foundation
import Testing
import Troupe
import TroupeSettings

/// `troupe.yaml`, the environment and `--set`, layered by swift-configuration.
@Suite struct SettingsTests {
    /// Loads settings with `yaml` as `troupe.yaml` in a fresh directory.
    private func load(
        _ yaml: String? = nil,
        overrides: [String] = [],
        environment: [String: String] = [:]
    ) async throws -> TroupeSettings {
        try await withTemporaryDirectory { directory in
            if let yaml { try yaml.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8) }
            return try await TroupeSettings.load(overrides: overrides, environment: environment, directory: directory)
        }
    }

    /// The error loading these settings gives.
    private func failure(
        _ yaml: String? = nil,
        overrides: [String] = [],
        environment: [String: String] = [:]
    ) async -> TroupeError? {
        do {
            _ = try await load(yaml, overrides: overrides, environment: environment)
            return nil
        } catch {
            return error as? TroupeError
        }
    }

    /// `tenants.NAME.maxConcurrentRuns` from the file or `--set`, with a default for the others.
    @Test func tenantLimitsAreRead() async throws {
        let settings = try await load(
            "tenants:\n  acme:\n    maxConcurrentRuns: 3\nworker:\n  maxConcurrentRunsPerTenant: 10\n",
            overrides: ["tenants.globex.maxConcurrentRuns=0"])
        #expect(settings.worker.maxConcurrentRuns == ["acme": 3, "globex": 0])
        #expect(settings.worker.maxConcurrentRunsPerTenant == 10)
        let badName = await failure("tenants:\n  Acme!:\n    maxConcurrentRuns: 3\n")
        #expect(badName?.message.contains("tenants.Acme!") == true, "\(String(describing: badName))")
        let badValue = await failure(overrides: ["tenants.acme.maxConcurrentRuns=-1"])
        #expect(badValue?.message.contains("tenants.acme.maxConcurrentRuns") == true, "\(String(describing: badValue))")
        let unknown = await failure(overrides: ["tenants.acme.budget=3"])
        #expect(unknown != nil)
    }

    @Test func flagsBeatTheEnvironmentWhichBeatsTheFileWhichBeatsTheDefaults() async throws {
        let yaml = "model:\n  retry:\n    maxAttempts: 2\n"
        let environment = ["TROUPE_MODEL_RETRY_MAX_ATTEMPTS": "4"]
        #expect(try await load().resilience.retry.maxAttempts == 3)
        #expect(try await load(yaml).resilience.retry.maxAttempts == 2)
        #expect(try await load(yaml, environment: environment).resilience.retry.maxAttempts == 4)
        let all = try await load(yaml, overrides: ["model.retry.maxAttempts=6"], environment: environment)
        #expect(all.resilience.retry.maxAttempts == 6)
    }

    @Test func everyKeyIsReadFromTheFile() async throws {
        let yaml = """
            store: sqlite:/tmp/troupe-settings.db
            model:
              name: gpt-4o
              baseURL: https://user:secret@llm.example/v1
              fallbacks: [gpt-4o-mini, backup]
              timeouts: {connect: 3, firstByte: 40, idle: 12.5, total: 100}
              retry: {maxAttempts: 5, initialBackoff: 0.25, maxBackoff: 8, maxRetryAfter: 30, deadline: 120}
              rateLimits: {requestsPerMinute: 500, tokensPerMinute: 200000}
              circuitBreaker: {consecutiveFailures: 3, failureRate: 0.75, window: 40, minimumCalls: 8, coolDown: 15, probes: 2}
            endpoints:
              backup: {baseURL: "https://backup.example/v1", model: llama-3.1-70b, apiKeyEnv: BACKUP_KEY}
            run:
              workspace: project
              tools: [fs]
              maxSteps: 7
              maxConcurrency: 2
              maxIterations: 5
              stepTimeout: 60
              maxTokens: 2048
              stream: true
            """
        let environment = ["OPENAI_API_KEY": "sk-primary", "BACKUP_KEY": "sk-backup"]
        let (settings, directory) = try await withTemporaryDirectory { directory in
            try yaml.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
            let settings = try await TroupeSettings.load(environment: environment, directory: directory)
            return (settings, URL(fileURLWithPath: directory).standardizedFileURL.path)
        }
        #expect(settings.file == directory + "/troupe.yaml")
        #expect(settings.store == "sqlite:/tmp/troupe-settings.db")
        let run = settings.runDefaults
        #expect(run.model == "gpt-4o")
        #expect(run.baseURL == "https://llm.example/v1", "credentials in the URL are never journaled")
        #expect(run.workspace == directory + "/project", "a path in the file is relative to the file's folder")
        #expect(run.tools == ["fs"])
        #expect(run.maxSteps == 7 && run.maxConcurrentSteps == 2 && run.maxIterations == 5)
        #expect(run.stepTimeoutSeconds == 60 && run.maxTokens == 2048 && run.stream)
        #expect(settings.apiKey == "sk-primary")

        let resilience = settings.resilience
        #expect(resilience.timeouts == ModelTimeouts(connectSeconds: 3, firstByteSeconds: 40, idleSeconds: 12.5, totalSeconds: 100))
        #expect(
            resilience.retry
                == RetryPolicy(
                    maxAttempts: 5, initialBackoffSeconds: 0.25, maxBackoffSeconds: 8, maxRetryAfterSeconds: 30, deadlineSeconds: 120))
        #expect(resilience.rateLimits == RateLimits(requestsPerMinute: 500, tokensPerMinute: 200_000))
        #expect(
            resilience.circuitBreaker
                == CircuitBreaker.Policy(
                    consecutiveFailures: 3, failureRate: 0.75, window: 40, minimumCalls: 8, coolDownSeconds: 15, probes: 2))

        let fallbacks = settings.resilience(for: run).fallbacks
        #expect(
            fallbacks == [
                ModelEndpoint(baseURL: "https://llm.example/v1", apiKey: "sk-primary", model: "gpt-4o-mini"),
                ModelEndpoint(baseURL: "https://backup.example/v1", apiKey: "sk-backup", model: "llama-3.1-70b"),
            ])
    }

    @Test func theEnvironmentNamesKeepTheirMeaning() async throws {
        let settings = try await load(environment: [
            "TROUPE_MODEL": "llama3", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "OPENAI_API_KEY": "sk-env",
            "TROUPE_STORE": "sqlite:/tmp/x.db", "TROUPE_MODEL_TIMEOUTS_IDLE": "7", "TROUPE_RUN_TOOLS": "none",
            "TROUPE_MODEL_CIRCUIT_BREAKER_ENABLED": "false", "TROUPE_MODEL_FALLBACKS": "a, b", "TROUPE_RUN_MAX_STEPS": "",
        ])
        #expect(settings.runDefaults.model == "llama3")
        #expect(settings.runDefaults.baseURL == "http://127.0.0.1:11434/v1")
        #expect(settings.apiKey == "sk-env")
        #expect(settings.store == "sqlite:/tmp/x.db")
        #expect(settings.resilience.timeouts.idleSeconds == 7)
        #expect(settings.runDefaults.tools == [])
        #expect(settings.resilience.circuitBreaker == nil)
        #expect(settings.fallbacks.map(\.model) == ["a", "b"])
        #expect(settings.runDefaults.maxSteps == 10, "an empty variable is not set")
    }

    @Test func everyKeyHasItsOwnVariable() {
        let names = SettingKeys.all.map(\.environment)
        #expect(Set(names).count == names.count)
        #expect(SettingKeys.key(named: "model.circuitBreaker.coolDown")?.environment == "TROUPE_MODEL_CIRCUIT_BREAKER_COOL_DOWN")
        #expect(SettingKeys.key(named: "endpoints.backup.apiKeyEnv")?.environment == "TROUPE_ENDPOINTS_BACKUP_API_KEY_ENV")
        #expect(SettingKeys.key(named: "endpoints.backup.nope") == nil)
    }

    @Test func badSettingsAreRefusedWithTheKeyAndWhereItCameFrom() async throws {
        let cases: [(yaml: String?, overrides: [String], environment: [String: String], message: String)] = [
            ("model:\n  retires: 3\n", [], [:], "Unknown setting 'model.retires'"),
            ("model:\n  retires: 3\n", [], [:], "Did you mean 'model.retry'?"),
            ("model:\n  apiKey: sk-1\n", [], [:], "API keys are read from the environment only"),
            (nil, ["model.apiKey=sk-1"], [:], "API keys are read from the environment only"),
            ("model:\n  retry:\n    maxAttempts: lots\n", [], [:], "model.retry.maxAttempts from /"),
            (
                nil, [], ["TROUPE_MODEL_RETRY_MAX_ATTEMPTS": "zero"],
                "from TROUPE_MODEL_RETRY_MAX_ATTEMPTS must be a whole number (got 'zero')"
            ),
            (nil, ["model.timeouts.idle=0"], [:], "model.timeouts.idle from --set must be above 0"),
            (nil, ["model.retry.initialBackoff=10", "model.retry.maxBackoff=1"], [:], "must be at least model.retry.initialBackoff"),
            (nil, ["model.circuitBreaker.failureRate=1.5"], [:], "failureRate from --set must be above 0 and at most 1"),
            (nil, ["run.stream=maybe"], [:], "run.stream from --set must be true or false"),
            (nil, ["model.retry.maxAttempts"], [:], "--set takes KEY=VALUE"),
            ("- a\n- b\n", [], [:], "must hold a mapping of settings"),
            ("model: [1, 2]\n", [], [:], "Unknown setting 'model'"),
            ("model:\n  name: [a]\n", [], [:], "is a list; it must be text"),
            ("model: {name: \"unclosed\n", [], [:], "is not valid YAML"),
            (nil, [], ["TROUPE_CONFIG": "/nonexistent/troupe.yaml"], "(from TROUPE_CONFIG) does not exist"),
            (nil, ["run.tools=fs,teleport"], [:], "run.tools from --set"),
            (nil, ["server.allowedTools=mcp:../x"], [:], "server.allowedTools from --set"),
        ]
        for (yaml, overrides, environment, message) in cases {
            let error = await failure(yaml, overrides: overrides, environment: environment)
            #expect(error?.code == .configuration, "\(message)")
            #expect(error?.message.contains(message) == true, "expected '\(message)' in: \(error?.message ?? "no error")")
        }
    }

    @Test func toolListsTakeGroupsAndSingleTools() async throws {
        let settings = try await load("run:\n  tools: [fs_read, web]\nserver:\n  allowedTools: fs, mcp:time/now\n")
        #expect(settings.runDefaults.tools == ["fs_read", "web"])
        #expect(settings.server.allowedTools == ["fs", "mcp:time/now"])
    }

    @Test func aListMayBeGivenAsOneCommaSeparatedString() async throws {
        let settings = try await load("run:\n  tools: none\nmodel:\n  fallbacks: a, b\n")
        #expect(settings.runDefaults.tools == [])
        #expect(settings.fallbacks.map(\.model) == ["a", "b"])
    }

    @Test func theShellToolsPolicyIsASetting() async throws {
        let yaml =
            "tools:\n  shell:\n    allowedPrograms: [git, make]\n    allowScripts: true\n    maxTimeout: 30\n    maxOutputBytes: 1000\n"
        let policy = try await load(yaml).shellPolicy
        #expect(policy.allowedExecutables == ["git", "make"])
        #expect(policy.allowShellScripts)
        #expect(policy.maxTimeout == .seconds(30) && policy.defaultTimeout == .seconds(30))
        #expect(policy.maxOutputBytes == 1000)
        #expect(try await load().shellPolicy == ShellPolicy())
        let error = await failure(overrides: ["tools.shell.allowedPrograms=/bin/sh"])
        #expect(error?.message.contains("give program names") == true)
    }

    @Test func theWebToolsPolicyIsASetting() async throws {
        let policy = try await load(
            "tools:\n  web: {allowedPrivateHosts: [Wiki.Internal], maxBytes: 4096, timeout: 5, maxRedirects: 2}\n"
        ).webPolicy
        #expect(policy == WebFetchPolicy(allowedPrivateHosts: ["wiki.internal"], maxRedirects: 2, maxBytes: 4096, timeout: .seconds(5)))
    }

    @Test func mcpServersAreConfiguredByNameWithSecretsFromTheEnvironment() async throws {
        let yaml = """
            mcp:
              servers:
                time:
                  command: uvx
                  args: [mcp-server-time, --local-timezone, UTC]
                  env: {TZ: UTC, API_TOKEN: "${TIME_TOKEN}"}
                  cwd: tools
                  timeout: 20
                  readOnlyTools: [get_current_time, convert_*]
                  maxRestarts: 2
                github:
                  url: https://mcp.example.com/mcp
                  headers: {Authorization: "Bearer ${GH_TOKEN}"}
                  startupTimeout: 5
                  idempotentTools: [update_issue]
            """
        let settings = try await load(yaml, environment: ["TIME_TOKEN": "t-1", "GH_TOKEN": "gh-2"])
        let servers = Dictionary(uniqueKeysWithValues: settings.mcpServers.map { ($0.name, $0) })
        #expect(settings.mcpServers.map(\.name) == ["github", "time"])
        let time = try #require(servers["time"])
        guard case .stdio(let command, let arguments, let environment, let directory) = time.transport else {
            Issue.record("time should be a stdio server")
            return
        }
        #expect(command == "uvx" && arguments == ["mcp-server-time", "--local-timezone", "UTC"])
        #expect(environment == ["TZ": "UTC", "API_TOKEN": "t-1"])
        #expect(directory?.hasSuffix("/tools") == true, "relative to the file's folder")
        #expect(time.callTimeout == .seconds(20) && time.maxRestarts == 2)
        #expect(time.effect(of: "convert_time") == .readOnly && time.effect(of: "other") == .sideEffecting)
        let github = try #require(servers["github"])
        #expect(github.transport == .http(url: "https://mcp.example.com/mcp", headers: ["Authorization": "Bearer gh-2"]))
        #expect(github.startupTimeout == .seconds(5) && github.effect(of: "update_issue") == .idempotent)

        let overridden = try await load(yaml, overrides: ["mcp.servers.time.timeout=3"], environment: ["TIME_TOKEN": "t", "GH_TOKEN": "x"])
        #expect(overridden.mcpServers.first { $0.name == "time" }?.callTimeout == .seconds(3))
    }

    /// The example in docs/CONFIGURATION.md is a valid file.
    @Test func theDocumentedExampleLoads() async throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/CONFIGURATION.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        let start = try #require(text.range(of: "```yaml\n# troupe.yaml\n"))
        let end = try #require(text[start.upperBound...].range(of: "```"))
        let settings = try await load(String(text[start.upperBound..<end.lowerBound]), environment: ["GITHUB_TOKEN": "ghp-1"])
        #expect(settings.runDefaults.model == "gpt-4o" && settings.runDefaults.tools == ["fs", "mcp"])
        #expect(settings.mcpServers.map(\.name) == ["github", "time"])
        #expect(settings.fallbacks.map(\.model) == ["gpt-4o-mini", "llama-3.1-70b-instruct"])
    }

    @Test func badMCPServerSettingsAreRefused() async throws {
        let cases: [(yaml: String, message: String)] = [
            ("mcp:\n  servers:\n    x:\n      command: a\n      url: http://h/mcp\n", "sets both command and url"),
            ("mcp:\n  servers:\n    x:\n      args: [a]\n", "needs a command"),
            ("mcp:\n  servers:\n    x:\n      url: file:///etc/passwd\n", "must be an http or https URL"),
            ("mcp:\n  servers:\n    bad.name:\n      command: a\n", "Unknown setting"),
            ("mcp:\n  servers:\n    x:\n      comand: a\n", "Unknown setting 'mcp.servers.x.comand'"),
            ("mcp:\n  servers:\n    x:\n      command: a\n      env: {K: \"${MISSING_VAR}\"}\n", "MISSING_VAR is not set"),
            ("mcp:\n  servers:\n    x:\n      command: a\n      env: {K: \"${OPEN\"}\n", "without its '}'"),
            ("mcp:\n  servers:\n    x:\n      command: a\n      timeout: 0\n", "timeout from"),
        ]
        for (yaml, message) in cases {
            let error = await failure(yaml)
            #expect(error?.code == .configuration, "\(message)")
            #expect(error?.message.contains(message) == true, "expected '\(message)' in: \(error?.message ?? "no error")")
        }
    }

    @Test func anEmptyFileIsNoSettings() async throws {
        #expect(try await load("").resilience == ModelResilience())
        #expect(try await load("# only a comment\n").runDefaults.model == "gpt-4o-mini")
    }

    @Test func aFileNamedByFlagOrVariableIsReadFromAnywhere() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/elsewhere.yaml"
            try "model:\n  name: from-file\n".write(toFile: path, atomically: true, encoding: .utf8)
            let byFlag = try await TroupeSettings.load(file: path, environment: [:], directory: "/")
            #expect(byFlag.runDefaults.model == "from-file")
            let byVariable = try await TroupeSettings.load(environment: ["TROUPE_CONFIG": path], directory: "/")
            #expect(byVariable.file == URL(fileURLWithPath: path).standardizedFileURL.path)
            let none = try await TroupeSettings.load(environment: [:], directory: directory)
            #expect(none.file == nil, "no troupe.yaml in the directory: defaults")
        }
    }
}
