import ArgumentParser
import Foundation
import Troupe
import TroupeTesting

struct MockServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock-server",
        abstract: "Serve the deterministic mock OpenAI-compatible model on 127.0.0.1, for tests and benchmarks.",
        discussion: """
            Planner requests get a plan of --steps steps (each depending on the previous one, each using one of the \
            offered tools in turn); executor requests get a call to the first offered tool with arguments made up from \
            its schema, then a short answer. Point any OpenAI-compatible client at the printed base URL. Stops on Ctrl-C.

            Example: troupe mock-server --port 8089 --steps 5 &
                     troupe run "anything" --base-url http://127.0.0.1:8089/v1 --store sqlite:/tmp/t.db
            """
    )

    @Option(name: .long, help: "The port to listen on (default: 0, any free port).")
    var port = 0

    @Option(name: .long, help: "Steps in each plan (default: 3).")
    var steps = 3

    @Option(name: .long, help: "Milliseconds to wait before each answer (default: 0).")
    var latencyMs = 0

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be between 0 and 65535.") }
        guard (1...1_000).contains(steps) else { throw ValidationError("--steps must be between 1 and 1000.") }
        guard latencyMs >= 0 else { throw ValidationError("--latency-ms must not be negative.") }
    }

    func run() async throws {
        try await reportingErrors(verbose: false) {
            let server: MockOpenAIServer
            do {
                server = try await MockOpenAIServer.start(
                    configuration: MockOpenAIServer.Configuration(planSteps: steps, latency: .milliseconds(latencyMs), requestsKept: 0),
                    port: port
                )
            } catch {
                // Exit code 1 means a failed run: a port in use is a bad flag value (6).
                throw TroupeError(.configuration, "Cannot listen on 127.0.0.1:\(port): \(error). Choose another --port (0: any free one).")
            }
            say("mock OpenAI-compatible server at \(server.baseURL) — Ctrl-C to stop")
            let (stop, continuation) = AsyncStream.makeStream(of: Void.self)
            Signals.onInterrupt { continuation.yield() }
            for await _ in stop { break }
            await server.shutdown()
            say("served \(server.requestCount) requests")
        }
    }
}
