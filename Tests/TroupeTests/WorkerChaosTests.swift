import Foundation
import Testing
import Troupe
import TroupeTesting

/// Workers over one PostgreSQL database, as a fleet runs them: woken by `NOTIFY` from other
/// processes, and killed or frozen mid-flight while 50 runs go through them.
@Suite(
    .serialized,
    .enabled(if: PostgresForTests.available, "needs PostgreSQL: ./scripts/test starts one (TROUPE_TEST_POSTGRES_URL)"))
struct WorkerChaosTests {
    @Test func aWorkerWakesForARunAnotherProcessCreated() async throws {
        let url = try await PostgresForTests.freshDatabase()
        let workerStore = try await PostgresRunStore.open(url: url, logger: PostgresForTests.logger)
        let apiStore = try await PostgresRunStore.open(url: url, logger: PostgresForTests.logger)
        let model = PlayingModel()
        let tools = try ToolRegistry([CountingTool()])
        // No poll: only the notification can wake it.
        let worker = RunWorker(
            store: workerStore, owner: "worker", pollInterval: .seconds(3600), logger: quietLogger,
            equip: { _ in RunEquipment(model: model, tools: tools) })
        let drain = DrainSignal()
        let running = Task { await worker.run(until: drain) }
        try await Task.sleep(for: .milliseconds(200))
        let id = RunID.make()
        _ = try await apiStore.createRun(id: id, goal: "Echo", configuration: RunConfiguration(model: "m"), at: Date())
        try await eventually("the run succeeded") { try await apiStore.requireRun(id).status == .succeeded }
        drain.begin()
        #expect(await running.value.finished == 1)
        await workerStore.close()
        await apiStore.close()
    }

    /// 3 `troupe worker` processes, 50 runs whose every step calls a side-effecting tool; one
    /// worker is killed mid-flight and another frozen past its lease, then woken.
    @Test func fiftyRunsSurviveAKilledAndAFrozenWorker() async throws {
        let url = try await PostgresForTests.freshDatabase()
        try await withTemporaryDirectory { directory in
            let configuration = MockOpenAIServer.Configuration(
                planSteps: 3, latency: .milliseconds(40), planTools: ["fs_append", "fs_append", "fs_append"],
                arguments: { _, _ in ["path": "effects.log", "content": "effect\n"] })
            try await MockOpenAIServer.withServer(configuration: configuration) { mock in
                let store = try await PostgresRunStore.open(url: url, logger: PostgresForTests.logger)
                defer { Task { await store.close() } }
                var ids: [RunID] = []
                for index in 0..<50 {
                    let workspace = directory + "/ws\(index)"
                    try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
                    let id = RunID("chaos-\(index)")
                    _ = try await store.createRun(
                        id: id, goal: "Record three effects",
                        configuration: RunConfiguration(model: "mock", baseURL: mock.baseURL, workspace: workspace), at: Date())
                    ids.append(id)
                }
                let arguments = [
                    "worker", "--store", url, "--concurrency", "4", "--set", "worker.leaseDuration=3", "--set",
                    "worker.pollInterval=0.5", "--set", "worker.maxAttempts=100",
                ]
                let workers = try (0..<3).map { _ in try CLIProcess(arguments, directory: directory, separateErrors: true) }
                defer { for worker in workers where worker.process.isRunning { worker.kill(SIGKILL) } }

                try await workers[0].waitUntil("a third of the model calls") { mock.requestCount >= 100 }
                workers[0].kill(SIGKILL)
                #expect(await workers[0].wait() == SIGKILL)

                let frozen = workers[1]
                try await eventually("the worker to freeze holds a run") {
                    try await holdsALease(frozen.process.processIdentifier, ids, store)
                }
                frozen.kill(SIGSTOP)
                // Past its 3 s lease: the others take its runs over.
                try await Task.sleep(for: .seconds(5))
                frozen.kill(SIGCONT)

                try await eventually("every run ended or needs attention") {
                    for id in ids {
                        let status = try await store.requireRun(id).status
                        if !(status.isTerminal || status == .needsAttention) { return false }
                    }
                    return true
                }
                for worker in workers.dropFirst() {
                    worker.kill(SIGTERM)
                    #expect(await worker.wait() == 0, "worker log:\n\(worker.errorOutput)")
                }
                #expect(frozen.errorOutput.contains("another driver took the run over"), "\(frozen.errorOutput)")

                var succeeded = 0
                var completedModelCalls = 0
                for (index, id) in ids.enumerated() {
                    let records = try await store.events(of: id)
                    // Gap-free and unforked: 1, 2, 3, … with one event per number.
                    #expect(records.map(\.sequence) == Array(1...records.count), "run \(id)")
                    let machine = try RunStateMachine(runID: id, replaying: records)
                    var kinds: [ActivityKey: ActivityKind] = [:]
                    var completed: Set<ActivityKey> = []
                    var appends = 0
                    for record in records {
                        switch record.event {
                        case .activityStarted(let key, let kind):
                            // A finished call is never started again: not a model call, not a tool call.
                            #expect(!completed.contains(key), "run \(id) started \(key) again after it completed")
                            kinds[key] = kind
                        case .activityCompleted(let key, _):
                            #expect(completed.insert(key).inserted, "run \(id) completed \(key) twice")
                            switch kinds[key] {
                            case .model?: completedModelCalls += 1
                            case .tool(name: "fs_append", _, _)?: appends += 1
                            default: break
                            }
                        default: break
                        }
                    }
                    let effects = effectLines(directory + "/ws\(index)")
                    switch machine.status {
                    case .succeeded:
                        succeeded += 1
                        #expect(records.filter { if case .runSucceeded = $0.event { true } else { false } }.count == 1)
                        #expect(effects == 3, "run \(id): \(effects) effects")
                    case .needsAttention:
                        // Parked on the side-effecting call in flight at the kill, which may or may not have happened.
                        let parked = try #require(machine.attentionKey)
                        guard case .tool(name: "fs_append", _, _)? = kinds[parked] else {
                            Issue.record("run \(id) is parked on \(parked), not a side-effecting call")
                            continue
                        }
                        #expect(effects == appends || effects == appends + 1, "run \(id): \(effects) effects, \(appends) journaled")
                    default:
                        Issue.record("run \(id) ended \(machine.status.rawValue): \(machine.error?.message ?? "")")
                    }
                }
                #expect(succeeded >= 40)
                #expect(mock.requestCount >= completedModelCalls)
            }
        }
    }

    private func holdsALease(_ pid: Int32, _ ids: [RunID], _ store: PostgresRunStore) async throws -> Bool {
        for id in ids {
            if let lease = try await store.lease(of: id), lease.expiresAt > Date(), lease.owner.contains("/\(pid)/") { return true }
        }
        return false
    }

    private func effectLines(_ workspace: String) -> Int {
        ((try? String(contentsOfFile: workspace + "/effects.log", encoding: .utf8)) ?? "").split(separator: "\n").count
    }
}
