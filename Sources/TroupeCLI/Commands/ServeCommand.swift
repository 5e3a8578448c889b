import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Troupe
import TroupeServer
import TroupeSettings

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the HTTP API (and drive runs in-process), until SIGTERM or Ctrl-C.",
        discussion: """
            Applications create runs with POST /v1/runs, follow them live with GET /v1/runs/ID/events (Server-Sent \
            Events), cancel and resume them; the OpenAPI document is at /openapi.yaml and /openapi.json. See \
            docs/API.md.

            By default the server also drives runs itself (--workers 8 at once), so one command on one machine is a \
            working node over SQLite; --workers 0 makes an API-only node in front of `troupe worker`s sharing a \
            PostgreSQL store. Callers choose among what the settings allow: models (model.name, server.models), tool \
            groups and tools (server.allowedTools); each run gets its own workspace under server.workspaceRoot.

            Every route but /healthz, /readyz and /openapi.* needs an API key (`Authorization: Bearer trp_…`; make             them with `troupe keys create`): the server refuses to start with no key in its store, unless             --insecure-no-auth (loopback addresses only), which makes every caller an admin of the default tenant.

            SIGTERM or SIGINT drains: /readyz answers 503, new requests get 503, event streams close (clients \
            reconnect with Last-Event-ID), the runs in hand are handed back (worker.drainTimeout), then the server \
            exits 0. A second signal stops at once. Settings come from --config or $TROUPE_CONFIG only.
            """
    )

    @Option(name: .long, help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(name: .long, help: "The port to listen on (0: any free port, printed at start).")
    var port = 8080

    @Option(name: .long, help: "Runs driven in this process at once; 0 for an API-only node (default: 8).")
    var workers = 8

    @Flag(
        name: .long,
        help:
            "Serve without API keys: every caller is an admin of the default tenant. Only with a loopback --host (127.0.0.1, ::1, localhost)."
    )
    var insecureNoAuth = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if insecureNoAuth, !Loopback.isLoopback(host) {
            throw ValidationError("--insecure-no-auth serves only a loopback --host (127.0.0.1, ::1, localhost), not \(host).")
        }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535 (got \(port)).") }
        guard (0...1000).contains(workers) else { throw ValidationError("--workers must be between 0 and 1000 (got \(workers)).") }
    }

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            try await global.withRuntime(namedFileOnly: true) { runtime in
                let logger = global.logger(label: "troupe.server")
                let settings = runtime.settings
                if settings.server.allowedTools.contains(where: { $0 == "shell" || $0.hasPrefix("shell_") }) {
                    await runtime.reportShellSandbox(to: logger)
                }
                let drain = DrainSignal()
                let root = settings.server.workspaceRoot ?? TroupeSettings.homeDirectory() + "/.troupe/workspaces"
                try PrivateFiles.createDirectories(root, for: "the runs' workspaces")
                let access: APIAccess
                if insecureNoAuth {
                    access = .open
                    logger.warning("--insecure-no-auth: no API key is checked; every caller is an admin of the default tenant")
                    if LogOutput.format == .text {
                        tell("troupe serve: WARNING: --insecure-no-auth: no API key is checked; every caller is an admin.")
                    }
                } else {
                    let keys = runtime.opened.keys
                    guard try await keys.keys(tenant: nil).contains(where: { $0.isActive(at: Date()) }) else {
                        throw TroupeError(
                            .configuration,
                            "No API key in the store \(runtime.opened.location) works: make one with "
                                + "`troupe keys create --tenant NAME --role admin\(runtime.opened.flag)`, "
                                + "or serve a loopback address without keys with --insecure-no-auth.")
                    }
                    access = .keys(keys)
                }
                var server = APIServer(
                    store: runtime.store, access: access, runDefaults: settings.runDefaults,
                    models: settings.server.models, allowedTools: settings.server.allowedTools, workspaceRoot: root, drain: drain,
                    owner: runtime.owner.description, logger: logger,
                    finishConfiguration: { configuration in
                        // A request may name only MCP servers this server's settings define.
                        let configured = settings.mcpServers.map(\.name)
                        for entry in configuration.tools {
                            let selection = try ToolSelection(entry)
                            if let server = selection.mcpServer, !configured.contains(server) {
                                throw TroupeError(
                                    .invalidInput, "There is no MCP server named '\(server)' on this server.",
                                    details: ["field": "tools", "tool": entry])
                            }
                            if selection == .allMCPServers, configured.isEmpty {
                                throw TroupeError(
                                    .invalidInput, "This server has no MCP servers configured.", details: ["field": "tools", "tool": entry])
                            }
                        }
                        configuration.toolRules = ToolRules(settings, toolGroups: configuration.tools).jsonValue
                    })
                server.prices = settings.prices
                server.rates = RequestRates(
                    perKey: settings.server.requestsPerKey, perKeyBurst: settings.server.requestBurstPerKey,
                    perTenant: settings.server.requestsPerTenant, perTenantBurst: settings.server.requestBurstPerTenant)
                server.maxStreamsPerKey = settings.server.maxStreamsPerKey
                for tenant in Set(settings.server.maxStepsByTenant.keys).union(settings.server.maxToolOutputCharactersByTenant.keys) {
                    server.tenantLimits[tenant] = TenantRunLimits(
                        maxSteps: settings.server.maxStepsByTenant[tenant],
                        maxToolOutputCharacters: settings.server.maxToolOutputCharactersByTenant[tenant])
                }
                let host = host
                let location = runtime.opened.location
                let listening = ListeningFlag()
                let application = try server.application(host: host, port: port) { port in
                    listening.set()
                    tell("troupe serve: listening on http://\(host):\(port) (store \(location))")
                }
                Signals.drainThenStop(
                    drain, what: "503 to new requests, event streams closed, runs handed back", timeout: settings.worker.drainTimeoutSeconds
                )
                // Started in this order and shut down in the reverse one: the API stops taking
                // requests, then the worker hands its runs back, then a PostgreSQL store closes —
                // also when the API fails (a port in use), so that no run is left leased.
                var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
                if let store = runtime.store as? PostgresRunStore { services.append(.init(service: store)) }
                if case .keys(let keys) = access {
                    services.append(.init(service: KeyUseFlusher(log: server.keyUses, store: keys, logger: logger)))
                }
                if workers > 0 {
                    let worker = WorkerService(worker: runtime.worker(concurrency: workers, logger: logger), drain: drain)
                    services.append(
                        .init(
                            service: worker, successTerminationBehavior: .gracefullyShutdownGroup,
                            failureTerminationBehavior: .gracefullyShutdownGroup))
                }
                services.append(
                    .init(
                        service: application, successTerminationBehavior: .gracefullyShutdownGroup,
                        failureTerminationBehavior: .gracefullyShutdownGroup))
                let group = ServiceGroup(
                    configuration: ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [], logger: logger))
                try await withThrowingTaskGroup(of: Bool.self) { tasks in  // true: the group ended
                    tasks.addTask {
                        do {
                            try await group.run()
                        } catch  where !listening.isSet {
                            // A bad flag value (a port in use), not a failed run: exit code 6.
                            throw TroupeError(
                                .configuration, "Cannot listen on \(host):\(port): \(error). Choose another --port (0: any free one).")
                        }
                        return true
                    }
                    if workers == 0 {
                        tasks.addTask {
                            // An API-only node stops once the drain began (responses in flight get a moment).
                            await drain.wait()
                            guard !Task.isCancelled else { return false }
                            try await Task.sleep(for: .milliseconds(100))
                            await group.triggerGracefulShutdown()
                            return false
                        }
                    }
                    while let groupEnded = try await tasks.next(), !groupEnded {}
                    tasks.cancelAll()
                }
                logger.notice("stopped")
            }
        }
    }
}

/// The in-process worker as a service of `serve`'s group: a graceful shutdown of the group (the
/// API failed) drains it, and its end (a drain that began on a signal) shuts the group down.
private struct WorkerService: Service {
    let worker: RunWorker
    let drain: DrainSignal

    func run() async throws {
        await withGracefulShutdownHandler {
            await worker.run(until: drain)
        } onGracefulShutdown: {
            drain.begin()
        }
    }
}

/// Writes when keys were last used every 30 seconds, and a last time at shutdown.
private struct KeyUseFlusher: Service {
    let log: KeyUseLog
    let store: any KeyStore
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(30))
                await flush()
            }
        }
        await flush()
    }

    private func flush() async {
        do {
            try await log.flush(to: store)
        } catch {
            logger.warning("cannot record when keys were last used", metadata: ["error": "\(TroupeError.wrap(error).message)"])
        }
    }
}

/// Whether the API is listening yet (an error before it is a bad `--host`/`--port`).
private final class ListeningFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
