import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
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

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535 (got \(port)).") }
        guard (0...1000).contains(workers) else { throw ValidationError("--workers must be between 0 and 1000 (got \(workers)).") }
    }

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            try await global.withRuntime(namedFileOnly: true) { runtime in
                let logger = {
                    var logger = global.logger(label: "troupe.server")
                    logger.logLevel = global.verbose ? .debug : .info
                    return logger
                }()
                let settings = runtime.settings
                let drain = DrainSignal()
                let root = settings.server.workspaceRoot ?? TroupeSettings.homeDirectory() + "/.troupe/workspaces"
                try PrivateFiles.createDirectories(root, for: "the runs' workspaces")
                let server = APIServer(
                    store: runtime.store, runDefaults: settings.runDefaults,
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
                let host = host
                let location = runtime.opened.location
                let application = try server.application(host: host, port: port) { port in
                    FileHandle.standardError.write(Data("troupe serve: listening on http://\(host):\(port) (store \(location))\n".utf8))
                }
                Signals.drainThenStop(
                    drain, what: "503 to new requests, event streams closed, runs handed back", timeout: settings.worker.drainTimeoutSeconds
                )
                // A PostgreSQL store is a service too, first so that it closes last (after the drain).
                let storeService = (runtime.store as? PostgresRunStore).map { [$0 as any Service] } ?? []
                let services = ServiceGroup(
                    configuration: ServiceGroupConfiguration(
                        services: storeService + [application], gracefulShutdownSignals: [], logger: logger))
                let worker = runtime.worker(concurrency: max(workers, 1), logger: logger)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await services.run() }
                    if workers > 0 { group.addTask { await worker.run(until: drain) } }
                    group.addTask {
                        // The server stops once the drain began and the runs in hand were handed back.
                        await drain.wait()
                        if workers == 0 { try await Task.sleep(for: .milliseconds(100)) }
                    }
                    try await group.next()
                    if workers > 0 { try await group.next() }
                    await services.triggerGracefulShutdown()
                    try await group.waitForAll()
                }
                logger.notice("stopped")
            }
        }
    }
}
