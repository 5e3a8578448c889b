import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import Troupe

struct OverheadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overhead",
        abstract: "The workload through Troupe: planner, executor, tools, the durable journal."
    )

    @OptionGroup var workload: WorkloadOptions

    @Option(
        help:
            "Journal store: memory, sqlite:PATH (a new temporary file if PATH is empty), or PostgreSQL (postgres://USER@HOST:PORT/DB, or postgres:URL)."
    )
    var store = "sqlite:"

    @Option(
        help: "The model client: resilient (what the CLI uses: timeouts, retries, breaker, rate limiter) or bare (OpenAIChatModel alone).")
    var client: ClientKind = .resilient

    enum ClientKind: String, ExpressibleByArgument {
        case resilient, bare
    }

    func run() async throws {
        let store = try await openStore()
        let tools = try ToolRegistry([EchoTool()])
        var configuration = RunConfiguration(model: "bench", workspace: FileManager.default.temporaryDirectory.path, tools: [])
        configuration.maxSteps = max(10, workload.steps)
        configuration.stream = workload.stream
        var settings = OpenAIChatModel.httpClientConfiguration()
        settings.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = workload.connections
        settings.timeout.connect = workload.connectTimeout
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: settings)
        do {
            try await workload.withServer { baseURL in
                let endpoint = ModelEndpoint(baseURL: baseURL, model: "bench")
                let model: any ChatModel =
                    switch self.client {
                    case .resilient: try ModelResilience().model(primary: endpoint, httpClient: client, logger: Logger(label: "bench"))
                    case .bare: try OpenAIChatModel(configuration: .init(baseURL: baseURL, model: "bench"), httpClient: client)
                    }
                let driver = RunDriver(store: store, model: model, tools: tools)
                let steps = workload.steps
                let extra = ["store": "\"\(self.store)\"", "client": "\"\(self.client.rawValue)\""]
                try await workload.measure(mode: "troupe", extra: extra) { [configuration] in
                    let final = try await driver.run(goal: "Echo the steps", configuration: configuration)
                    guard final.status == .succeeded, final.steps.count == steps, final.usage.inputTokens > 0 else {
                        throw ValidationError("A run did not succeed as expected: \(final.status) \(final.error?.message ?? "")")
                    }
                }
            }
        } catch {
            try? await client.shutdown()
            try? await store.close()
            throw error
        }
        try await client.shutdown()
        try await store.close()
    }

    private func openStore() async throws -> any RunStore {
        if store == "memory" { return InMemoryRunStore() }
        if store.hasPrefix("postgres://") || store.hasPrefix("postgres:") {
            let url = store.hasPrefix("postgres://") ? store : String(store.dropFirst("postgres:".count))
            return try await PostgresRunStore.open(url: url, logger: Logger(label: "troupe-bench"))
        }
        guard store.hasPrefix("sqlite:") else { throw ValidationError("--store is memory, sqlite:PATH, postgres://URL or postgres:URL.") }
        var path = String(store.dropFirst("sqlite:".count))
        if path.isEmpty {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("troupe-bench-\(UUID().uuidString).db").path
        }
        return try await SQLiteRunStore.open(path: path)
    }
}

/// The workload's only tool.
struct EchoTool: Tool {
    let name = "echo"
    let description = "Echo the text back."
    let effect = ToolEffect.readOnly
    let parameters: JSONSchema = .object([.init("text", .string("What to echo."))])

    func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        ToolOutput(arguments["text"]?.stringValue ?? "")
    }
}
