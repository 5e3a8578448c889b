import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import TroupeTesting

/// The workload's knobs, shared by `overhead` and `baseline` so both measure the same thing.
struct WorkloadOptions: ParsableArguments {
    @Option(help: "An OpenAI-compatible server to use instead of the in-process mock.")
    var baseURL: String?

    @Option(help: "Steps per plan (K).")
    var steps = 5

    @Option(help: "Runs to measure.")
    var runs = 200

    @Option(help: "Runs in flight at once.")
    var concurrency = 50

    @Flag(help: "Stream model answers (SSE).")
    var stream = false

    @Option(help: "Latency of the in-process mock, in milliseconds.")
    var latencyMs = 0

    @Option(help: "Unmeasured warm-up runs.")
    var warmup = 10

    @Option(help: "HTTP/1.1 connections the client may open to the server (both modes; Troupe's default is 1,024).")
    var connections = 1_024

    /// How long a request may wait for a connection (AsyncHTTPClient counts the wait in the pool
    /// as connecting): with thousands of runs starting at once, longer than Troupe's 10 s.
    var connectTimeout: TimeAmount { .seconds(Int64(max(10, concurrency / 100))) }

    func validate() throws {
        guard steps >= 1, runs >= 1, concurrency >= 1, connections >= 1 else {
            throw ValidationError("--steps, --runs, --concurrency and --connections must be positive.")
        }
    }

    /// Runs `body` with the base URL to use: `--base-url`, or an in-process mock on its own thread.
    func withServer(_ body: (String) async throws -> Void) async throws {
        if let baseURL {
            try await body(baseURL)
            return
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let mock = try await MockOpenAIServer.start(
            configuration: .init(planSteps: steps, latency: .milliseconds(latencyMs), planTools: ["echo"], requestsKept: 0),
            group: group
        )
        do {
            try await body(mock.baseURL)
        } catch {
            await mock.shutdown()
            try await group.shutdownGracefully()
            throw error
        }
        await mock.shutdown()
        try await group.shutdownGracefully()
    }

    /// Runs `run` `runs` times with `concurrency` in flight (after the warm-up), and reports.
    func measure(mode: String, extra: [String: String] = [:], _ run: @escaping @Sendable () async throws -> Void) async throws {
        for _ in 0..<warmup { try await run() }
        let cpuBefore = Measurement.cpuSeconds()
        let started = ContinuousClock.now
        let latencies = try await withThrowingTaskGroup(of: Duration.self) { group in
            var launched = 0
            var latencies: [Duration] = []
            func launch() {
                launched += 1
                group.addTask {
                    let start = ContinuousClock.now
                    try await run()
                    return ContinuousClock.now - start
                }
            }
            for _ in 0..<min(concurrency, runs) { launch() }
            while let latency = try await group.next() {
                latencies.append(latency)
                if launched < runs { launch() }
            }
            return latencies
        }
        let wall = Measurement.seconds(ContinuousClock.now - started)
        let cpu = Measurement.cpuSeconds() - cpuBefore
        let modelCalls = runs * (1 + 2 * steps)
        var report: [String: String] = [
            "mode": "\"\(mode)\"",
            "runs": "\(runs)",
            "steps": "\(steps)",
            "concurrency": "\(concurrency)",
            "stream": "\(stream)",
            "mock": baseURL == nil ? "\"in-process\"" : "\"external\"",
            "model_calls": "\(modelCalls)",
            "wall_s": Measurement.format(wall),
            "runs_per_s": Measurement.format(Double(runs) / wall),
            "cpu_ms_per_model_call": Measurement.format(cpu * 1000 / Double(modelCalls)),
            "peak_rss_mib": Measurement.format(Measurement.peakRSSMiB()),
            "p50_ms": Measurement.format(Measurement.percentile(latencies, 0.50) * 1000),
            "p99_ms": Measurement.format(Measurement.percentile(latencies, 0.99) * 1000),
        ]
        for (key, value) in extra { report[key] = value }
        print("{" + report.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}")
    }
}

enum Measurement {
    /// User + system CPU time of this process.
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
            + Double(usage.ru_stime.tv_usec) / 1e6
    }

    /// Peak resident set size of this process (Linux reports `ru_maxrss` in KiB).
    static func peakRSSMiB() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func percentile(_ values: [Duration], _ fraction: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        return seconds(sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.down)))])
    }

    static func format(_ value: Double) -> String { String(format: "%.3f", value) }
}
