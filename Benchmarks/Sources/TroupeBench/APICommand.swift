import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// The HTTP API's own cost: `POST /v1/runs`, then its event stream followed to the end.
struct APICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Requests/s and latency of `troupe serve`: create a run, then follow its events to the end.",
        discussion: """
            Starts `troupe serve --store STORE --workers W` on --port (its settings point the model at --base-url), \
            then, --concurrency at a time, creates --runs runs (POST /v1/runs) and follows each one's event stream \
            until the run ends. Prints one JSON line: creates/s, the create latency (p50, p99), the time from create \
            to the stream's end (p50, p99), and the server's CPU per run (the API and its in-process workers).
            """
    )

    @Option(help: "The `troupe` executable (a release build).")
    var troupe: String

    @Option(help: "The store the server uses: sqlite:PATH or postgres://USER@HOST:PORT/DB.")
    var store: String

    @Option(help: "The mock model server's base URL (troupe mock-server --steps K).")
    var baseURL: String

    @Option(help: "The port the server listens on.")
    var port = 8095

    @Option(help: "Runs the server drives at once (serve --workers).")
    var workers = 64

    @Option(help: "Clients at once, each creating a run and following it.")
    var concurrency = 32

    @Option(help: "Steps per plan (K): the mock server's --steps.")
    var steps = 5

    @Option(help: "Runs to measure.")
    var runs = 1_000

    @Option(help: "Unmeasured warm-up runs.")
    var warmup = 20

    @Flag(help: "Create runs only (POST), without following their events.")
    var createOnly = false

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("troupe-bench-api-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let settings = """
            model: {name: bench, baseURL: "\(baseURL)"}
            run: {tools: [fs_list], maxSteps: \(max(10, steps))}
            server: {workspaceRoot: "\(directory)/workspaces", allowedTools: [fs], models: [bench]}
            worker: {pollInterval: 5}
            """
        try settings.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
        let server = try TroupeProcess(
            troupe,
            ["serve", "--store", store, "--port", "\(port)", "--workers", "\(workers)", "--config", directory + "/troupe.yaml"])
        defer {
            server.stop()
            try? FileManager.default.removeItem(atPath: directory)
        }
        let base = "http://127.0.0.1:\(port)"
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = concurrency * 2
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        do {
            try await waitUntilReady(base, client, server)
            _ = try await measure(warmup, base, client)
            let cpuBefore = (server: server.cpuSeconds, postgres: CPUTime.postgresSeconds())
            let started = ContinuousClock.now
            let latencies = try await measure(runs, base, client)
            let wall = Measurement.seconds(ContinuousClock.now - started)
            let serverCPU = server.cpuSeconds - cpuBefore.server
            let postgresCPU = CPUTime.postgresSeconds() - cpuBefore.postgres
            let creates = latencies.map(\.create)
            let ends = latencies.map(\.end)
            let report: [(String, String)] = [
                ("mode", "\"api\""), ("store", store.hasPrefix("postgres") ? "\"postgres\"" : "\"sqlite\""),
                ("follow", "\(!createOnly)"), ("runs", "\(runs)"), ("concurrency", "\(concurrency)"), ("workers", "\(workers)"),
                ("wall_s", Measurement.format(wall)), ("runs_per_s", Measurement.format(Double(runs) / wall)),
                ("create_p50_ms", Measurement.format(Measurement.percentile(creates, 0.5) * 1000)),
                ("create_p99_ms", Measurement.format(Measurement.percentile(creates, 0.99) * 1000)),
                ("end_p50_ms", Measurement.format(Measurement.percentile(ends, 0.5) * 1000)),
                ("end_p99_ms", Measurement.format(Measurement.percentile(ends, 0.99) * 1000)),
                ("server_cpu_ms_per_run", Measurement.format(serverCPU * 1000 / Double(runs))),
                ("postgres_cpu_ms_per_run", Measurement.format(postgresCPU * 1000 / Double(runs))),
            ]
            print("{" + report.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
        } catch {
            FileHandle.standardError.write(Data("server log:\n\(server.output.suffix(3000))\n".utf8))
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    private func waitUntilReady(_ base: String, _ client: HTTPClient, _ server: TroupeProcess) async throws {
        for _ in 0..<300 {
            guard server.process.isRunning else { throw ValidationError("troupe serve exited: \(server.output.suffix(2000))") }
            if let response = try? await client.execute(HTTPClientRequest(url: base + "/readyz"), timeout: .seconds(1)),
                response.status == .ok
            {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("troupe serve did not become ready in 30 s: \(server.output.suffix(2000))")
    }

    /// Creates and follows `count` runs, `concurrency` at a time: per run, the create's latency and
    /// the time from the create to the stream's end.
    private func measure(_ count: Int, _ base: String, _ client: HTTPClient) async throws -> [(create: Duration, end: Duration)] {
        try await withThrowingTaskGroup(of: (create: Duration, end: Duration).self) { group in
            var launched = 0
            var results: [(create: Duration, end: Duration)] = []
            func launch() {
                launched += 1
                group.addTask { try await self.createAndFollow(base, client) }
            }
            for _ in 0..<min(concurrency, count) { launch() }
            while let result = try await group.next() {
                results.append(result)
                if launched < count { launch() }
            }
            return results
        }
    }

    private func createAndFollow(_ base: String, _ client: HTTPClient) async throws -> (create: Duration, end: Duration) {
        let start = ContinuousClock.now
        var request = HTTPClientRequest(url: base + "/v1/runs")
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: #"{"goal": "Echo the steps"}"#))
        let response = try await client.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 1 << 20)
        let created = ContinuousClock.now - start
        guard response.status == .created,
            let document = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any],
            let id = document["id"] as? String
        else { throw ValidationError("POST /v1/runs answered \(response.status): \(String(buffer: body).prefix(300))") }
        if createOnly { return (created, created) }
        let events = try await client.execute(HTTPClientRequest(url: base + "/v1/runs/\(id)/events"), timeout: .seconds(300))
        let stream = try await events.body.collect(upTo: 16 << 20)
        guard events.status == .ok, String(buffer: stream).contains("event: runSucceeded") else {
            throw ValidationError("The events of \(id) did not end with runSucceeded: \(String(buffer: stream).suffix(300))")
        }
        return (created, ContinuousClock.now - start)
    }
}
