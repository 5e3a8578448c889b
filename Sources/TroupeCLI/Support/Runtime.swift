import AsyncHTTPClient
import Foundation
import Logging
import Troupe
import TroupeSettings
import TroupeTools

/// Builds what a run needs from its configuration: the model client, the tools, the driver.
struct Runtime {
    /// The store, and how to name it.
    let opened: OpenedStore
    var store: any RunStore { opened.store }
    let settings: TroupeSettings
    let logger: Logger
    /// The HTTP client for model calls, owned (and shut down) by the command.
    let httpClient: HTTPClient
    /// The configured MCP servers (started on first use; the command stops them).
    let mcp: MCPServers
    let owner = LeaseOwner.current()

    /// The model client for `configuration`: the OpenAI-compatible API behind the settings'
    /// retries, fallbacks, breakers and rate limits (``ModelResilience``); each retry and fallback
    /// is journaled with its call.
    func model(for configuration: RunConfiguration) throws -> any ChatModel {
        let primary = settings.endpoint(for: configuration)
        if primary.apiKey == nil, primary.baseURL.contains("api.openai.com") {
            throw TroupeError(
                .configuration,
                "OPENAI_API_KEY is not set (or the variable model.apiKeyEnv names). Export it, or point --base-url at an "
                    + "OpenAI-compatible server (try `troupe demo` for an offline run)."
            )
        }
        return try settings.resilience(for: configuration).model(primary: primary, httpClient: httpClient, logger: logger)
    }

    /// The tools the configuration's entries select (whole groups or single tools), jailed to its
    /// workspace; `mcp`, `mcp:NAME` and `mcp:NAME/TOOL` start the MCP servers and list their tools.
    /// A single tool that does not exist (an MCP server without that tool) is refused, naming it.
    func tools(for configuration: RunConfiguration) async throws -> ToolRegistry {
        let selections = try ToolSelection.parse(configuration.tools)
        var tools: [any Tool] = []
        for group in ["fs", "shell", "web"] {
            let whole = selections.contains(.group(group))
            let names = Set(selections.compactMap { if case .tool(let name, group) = $0 { name } else { nil } })
            guard whole || !names.isEmpty else { continue }
            tools += try await builtInTools(group, configuration).filter { whole || names.contains($0.name) }
        }
        if selections.contains(.allMCPServers) {
            guard !mcp.names.isEmpty else {
                throw TroupeError(.configuration, "Tool group 'mcp' names no server: configure them under mcp.servers (docs/TOOLS.md).")
            }
            tools += try await mcp.tools()
        }
        // Servers named one by one (`mcp:NAME`, `mcp:NAME/TOOL`), each once; `mcp` listed them all.
        let servers = selections.contains(.allMCPServers) ? [] : ToolRules.servers(named: configuration.tools, in: mcp.names)
        for server in servers {
            let offered = try await mcp.tools(of: [server])
            if selections.contains(.mcpServer(server)) {
                tools += offered
                continue
            }
            var chosen = Set<String>()
            for case .mcpTool(server, let name) in selections where chosen.insert(name).inserted {
                guard let tool = offered.first(where: { ($0 as? MCPTool)?.remoteName == name }) else {
                    let names = offered.compactMap { ($0 as? MCPTool)?.remoteName }
                    throw TroupeError(
                        .configuration,
                        "The MCP server '\(server)' has no tool '\(name)' (it has: \(names.isEmpty ? "none" : names.joined(separator: ", ")))."
                    )
                }
                // Two servers' tools that get one Troupe name (`mcp:a/b_c`, `mcp:a_b/c`) are refused by the registry.
                tools.append(tool)
            }
        }
        return try ToolRegistry(tools, policy: settings.toolPolicy).checkedForModels()
    }

    /// Every tool of a built-in group, jailed to the configuration's workspace.
    private func builtInTools(_ group: String, _ configuration: RunConfiguration) async throws -> [any Tool] {
        switch group {
        case "fs": return FileTools.all(workspace: try Workspace(configuration.workspace), limits: fileLimits)
        case "shell":
            var policy = try await settings.shellPolicy.withSandbox()
            policy.protectedPaths = fileLimits.protectedPaths.files.sorted()
            return [ShellTool(workspace: try Workspace(configuration.workspace), policy: policy)]
        default: return [WebFetchTool(policy: settings.webPolicy)]
        }
    }

    /// Says once, at start, how `shell_run` will run: in the sandbox, refused (no sandbox can
    /// start), or — as a warning — without one (`tools.shell.sandbox: none`).
    func reportShellSandbox(to logger: Logger) async {
        do {
            let policy = try await settings.shellPolicy.withSandbox()
            if policy.sandbox == nil {
                logger.warning("shell_run is \(policy.sandboxDescription)")
            } else {
                logger.info("shell_run is \(policy.sandboxDescription)")
            }
        } catch {
            logger.warning("shell_run will be refused: \(TroupeError.wrap(error).message)")
        }
    }

    /// The file tools' limits: the settings' protected paths, plus the settings file in use and
    /// the store's files, wherever they are.
    var fileLimits: FileToolLimits {
        var protected = settings.protectedPaths
        for path in [settings.file, opened.file].compactMap({ $0 }) {
            // The real path, as the workspace resolves paths: /tmp and /private/tmp agree.
            protected.files.insert(Workspace.realPath(path) ?? path)
            protected.files.insert(path)
        }
        return FileToolLimits(protectedPaths: protected)
    }

    /// This runtime with a resumed run's journaled tool rules in place of the settings' own,
    /// and only the MCP servers the run's tool groups name (each checked to be defined as it
    /// was); and the rules to journal (with any server the groups name for the first time).
    func applying(_ rules: ToolRules, toolGroups: [String]) throws(TroupeError) -> (runtime: Runtime, rules: ToolRules) {
        let (settings, rules) = try rules.applied(to: settings, toolGroups: toolGroups)
        let runtime = Runtime(
            opened: opened, settings: settings, logger: logger, httpClient: httpClient,
            mcp: mcp.only(Set(settings.mcpServers.map(\.name))))
        return (runtime, rules)
    }

    /// What a worker drives a claimed run with: the run's journaled tool rules (with only the
    /// MCP servers it had, each still defined as it was), or the current ones for a run that
    /// predates journaled rules; the model and tools its configuration names; and the
    /// configuration to journal if the rules changed.
    func equipment(for configuration: RunConfiguration) async throws -> RunEquipment {
        var configuration = configuration
        var runtime = self
        if let journaled = try ToolRules.journaled(in: configuration) {
            let (applied, rules) = try applying(journaled, toolGroups: configuration.tools)
            runtime = applied
            configuration.toolRules = rules.jsonValue
        } else {
            configuration.toolRules = ToolRules(settings, toolGroups: configuration.tools).jsonValue
        }
        let model = try runtime.model(for: configuration)
        let tools = try await runtime.tools(for: configuration)
        return RunEquipment(model: model, tools: tools, configuration: configuration)
    }

    /// A worker over this runtime's store, as the settings' `worker.*` describe it, equipping
    /// each run it claims with ``equipment(for:)``.
    func worker(concurrency: Int, logger: Logger) -> RunWorker {
        let worker = settings.worker
        var runWorker = RunWorker(
            store: store, owner: owner.description, concurrency: concurrency, leaseDuration: .seconds(worker.leaseDurationSeconds),
            pollInterval: .seconds(worker.pollIntervalSeconds), maxAttempts: worker.maxAttempts,
            drainTimeout: .seconds(worker.drainTimeoutSeconds), logger: logger,
            equip: { summary in try await equipment(for: summary.configuration) })
        runWorker.maxConcurrentRuns = worker.maxConcurrentRuns
        runWorker.defaultMaxConcurrentRuns = worker.maxConcurrentRunsPerTenant
        return runWorker
    }

    func driver(
        model: any ChatModel,
        tools: ToolRegistry,
        observer: (@Sendable (RunEvent, RunStateMachine) -> Void)?
    ) -> RunDriver {
        RunDriver(
            store: store, model: model, tools: tools, owner: owner.description, logger: logger,
            observer: observer)
    }
}
