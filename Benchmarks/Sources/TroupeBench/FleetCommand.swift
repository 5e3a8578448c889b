import ArgumentParser
import Foundation
import Logging
import Troupe

/// Runs/s of a fleet of `troupe worker` processes over one store, as deployed.
struct FleetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Runs/s of N `troupe worker` processes over one store (PostgreSQL, or SQLite for one node).",
        discussion: """
            Starts --workers `troupe worker` processes, lets them finish a warm-up batch, then creates --runs runs \
            (16 at a time, as API nodes would) and waits until every one has ended. Each run's steps call fs_list \
            on an empty workspace, so a run is 1 + 2K model calls against --base-url (start `troupe mock-server \
            --steps K` there). Prints one JSON line: runs_per_s, and the CPU per model call of the workers, of the \
            PostgreSQL server processes and of this process (which creates the runs).
            """
    )

    @Option(help: "The store the workers share: postgres://USER@HOST:PORT/DB or sqlite:PATH.")
    var store: String

    @Option(help: "The `troupe` executable (a release build).")
    var troupe: String

    @Option(help: "The mock model server's base URL (troupe mock-server --steps K).")
    var baseURL: String

    @Option(help: "Worker processes.")
    var workers = 2

    @Option(help: "Runs each worker drives at once (worker --concurrency).")
    var concurrency = 32

    @Option(help: "Steps per plan (K): the mock server's --steps.")
    var steps = 5

    @Option(help: "Runs to measure.")
    var runs = 2_000

    @Option(help: "Unmeasured warm-up runs.")
    var warmup = 50

    func run() async throws {
        let logger = Logger(label: "troupe-bench")
        let opened: any RunStore =
            store.hasPrefix("postgres")
            ? try await PostgresRunStore.open(url: store, logger: logger)
            : try await SQLiteRunStore.open(path: String(store.dropFirst("sqlite:".count)), logger: logger)
        let workspace = FileManager.default.temporaryDirectory.appendingPathComponent("troupe-bench-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
        var configuration = RunConfiguration(model: "bench", baseURL: baseURL, workspace: workspace, tools: ["fs_list"])
        configuration.maxSteps = max(10, steps)
        let fleet = try (0..<workers).map { _ in
            try TroupeProcess(
                troupe, ["worker", "--store", store, "--concurrency", "\(concurrency)"])
        }
        defer {
            for worker in fleet { worker.stop() }
            try? FileManager.default.removeItem(atPath: workspace)
        }
        do {
            try await expectSucceeded(try await batch(warmup, of: configuration, in: opened, fleet: fleet), in: opened)
            let cpuBefore = (
                workers: fleet.map(\.cpuSeconds).reduce(0, +), postgres: CPUTime.postgresSeconds(), own: Measurement.cpuSeconds()
            )
            let started = ContinuousClock.now
            let ids = try await batch(runs, of: configuration, in: opened, fleet: fleet)
            let wall = Measurement.seconds(ContinuousClock.now - started)
            let workersCPU = fleet.map(\.cpuSeconds).reduce(0, +) - cpuBefore.workers
            let postgresCPU = CPUTime.postgresSeconds() - cpuBefore.postgres
            let ownCPU = Measurement.cpuSeconds() - cpuBefore.own
            try await expectSucceeded(ids, in: opened)
            let modelCalls = Double(runs * (1 + 2 * steps))
            let report: [(String, String)] = [
                ("mode", "\"fleet\""), ("store", store.hasPrefix("postgres") ? "\"postgres\"" : "\"sqlite\""),
                ("workers", "\(workers)"), ("concurrency", "\(concurrency)"), ("runs", "\(runs)"), ("steps", "\(steps)"),
                ("wall_s", Measurement.format(wall)), ("runs_per_s", Measurement.format(Double(runs) / wall)),
                ("worker_cpu_ms_per_model_call", Measurement.format(workersCPU * 1000 / modelCalls)),
                ("postgres_cpu_ms_per_model_call", Measurement.format(postgresCPU * 1000 / modelCalls)),
                ("creator_cpu_ms_per_run", Measurement.format(ownCPU * 1000 / Double(runs))),
            ]
            print("{" + report.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
        } catch {
            for worker in fleet { FileHandle.standardError.write(Data("worker log:\n\(worker.output.suffix(2000))\n".utf8)) }
            try? await opened.close()
            throw error
        }
        try await opened.close()
    }

    /// Creates `count` runs, 16 at a time, and waits until none is left to drive; returns their IDs.
    private func batch(_ count: Int, of configuration: RunConfiguration, in store: any RunStore, fleet: [TroupeProcess]) async throws
        -> [RunID]
    {
        guard count > 0 else { return [] }
        let ids = (0..<count).map { _ in RunID.make() }
        let started = Date()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<16 {
                group.addTask {
                    for id in ids[lane...].striding(by: 16) {
                        _ = try await store.createRun(id: id, goal: "Echo the steps", configuration: configuration, at: Date())
                    }
                }
            }
            try await group.waitForAll()
        }
        // Until no run is left to drive (one cheap query a tick, so that watching costs the
        // database little), then every run of the batch is checked.
        // (Only this batch's: runs left pending by something else, say parked after failed
        // attempts, are not waited for.)
        let unfinished = RunQuery(statuses: [.pending, .running], createdAfter: started.addingTimeInterval(-1), limit: 1)
        while try await !store.runs(unfinished).isEmpty {
            if let dead = fleet.first(where: { !$0.process.isRunning }) {
                throw ValidationError("A worker exited (\(dead.process.terminationStatus)): \(dead.output.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return ids
    }

    private func expectSucceeded(_ ids: [RunID], in store: any RunStore) async throws {
        for id in ids {
            let status = try await store.requireRun(id).status
            guard status == .succeeded else { throw ValidationError("Run \(id) ended \(status) (expected succeeded).") }
        }
    }
}

extension ArraySlice {
    /// Every `step`-th element from the first.
    fileprivate func striding(by step: Int) -> [Element] {
        Swift.stride(from: startIndex, to: endIndex, by: step).map { self[$0] }
    }
}
