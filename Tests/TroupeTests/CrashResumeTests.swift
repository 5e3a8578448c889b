import Foundation
import Testing
import Troupe
import TroupeTesting

/// The durability promise, end to end: a `troupe run` process killed with SIGKILL mid-step is
/// finished by `troupe resume` without repeating completed model or tool calls.
@Suite(.serialized) struct CrashResumeTests {
    static func mockConfiguration(latency: Duration) -> MockOpenAIServer.Configuration {
        MockOpenAIServer.Configuration(
            planSteps: 3,
            latency: latency,
            planTools: ["fs_append", "fs_list", "fs_append"],
            arguments: { tool, _ in
                switch tool {
                case "fs_append": ["path": "effects.log", "content": "side effect\n"]
                case "fs_list": ["path": "."]
                default: nil
                }
            }
        )
    }

    @Test func killedRunResumesWithoutRepeatingCompletedCalls() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = directory + "/workspace"
            try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
            let store = "sqlite:\(directory)/runs.db"
            try await MockOpenAIServer.withServer(configuration: Self.mockConfiguration(latency: .milliseconds(300))) { mock in
                let run = try CLIProcess(
                    [
                        "run", "Record two side effects", "--base-url", mock.baseURL, "--model", "mock", "--workspace", workspace,
                        "--store", store,
                    ],
                    directory: directory
                )
                // Request 4 is step s2's first model call: s1 (append + answer) is complete, s2 is in flight.
                try await run.waitUntil("the 4th model request") { mock.requestCount >= 4 }
                run.kill(SIGKILL)
                let killed = await run.wait()
                #expect(killed != 0)
                #expect(try effectCount(workspace) == 1)

                let runs = try await SQLiteRunStore.withStore(path: directory + "/runs.db") { try await $0.runs(RunQuery()) }
                let id = try #require(runs.first?.id)
                #expect(runs.first?.status == .running)

                let resumed = try await CLIProcess.run(["resume", id.rawValue, "--store", store], directory: directory)
                #expect(resumed.status == 0, "resume output:\n\(resumed.output)")
                #expect(resumed.output.contains("taking over"))

                // 1 plan + 3 steps × 2 turns = 7 calls, plus the one that was in flight at the kill.
                #expect(mock.requestCount == 8)
                #expect(try effectCount(workspace) == 2)

                let report = try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                    let machine = try RunStateMachine(runID: id, replaying: try await store.events(of: id))
                    return RunReport(summary: try await store.requireRun(id), machine: machine)
                }
                #expect(report.status == "succeeded")
                #expect(report.steps.map(\.status) == ["succeeded", "succeeded", "succeeded"])
                #expect(report.steps.flatMap(\.toolCalls).count == 3)
            }
        }
    }

    @Test func resumeRefusesWhileAnotherLiveProcessDrivesTheRun() async throws {
        try await withTemporaryDirectory { directory in
            let store = "sqlite:\(directory)/runs.db"
            try await MockOpenAIServer.withServer(configuration: Self.mockConfiguration(latency: .seconds(30))) { mock in
                let run = try CLIProcess(
                    ["run", "Slow run", "--base-url", mock.baseURL, "--model", "mock", "--workspace", directory, "--store", store],
                    directory: directory
                )
                try await run.waitUntil("the first model request") { mock.requestCount >= 1 }
                let runs = try await SQLiteRunStore.withStore(path: directory + "/runs.db") { try await $0.runs(RunQuery()) }
                let id = try #require(runs.first?.id)

                let refused = try await CLIProcess.run(["resume", id.rawValue, "--store", store], directory: directory)
                #expect(refused.status == 4, "output:\n\(refused.output)")
                #expect(refused.output.contains("is being driven by"))

                run.kill(SIGKILL)
                _ = await run.wait()
            }
        }
    }

    @Test func interruptedRunSaysHowToResumeAndResumes() async throws {
        try await withTemporaryDirectory { directory in
            let store = "sqlite:\(directory)/runs.db"
            try await MockOpenAIServer.withServer(configuration: Self.mockConfiguration(latency: .milliseconds(200))) { mock in
                let run = try CLIProcess(
                    ["run", "Interrupt me", "--base-url", mock.baseURL, "--workspace", directory, "--store", store],
                    directory: directory
                )
                try await run.waitUntil("the second model request") { mock.requestCount >= 2 }
                run.kill(SIGINT)
                #expect(await run.wait() == 130)
                let hint = try #require(run.output.split(separator: "\n").first { $0.contains("troupe resume run_") })
                let id = try #require(hint.split(separator: "`").dropFirst().first?.split(separator: " ").dropFirst(2).first)
                let resumed = try await CLIProcess.run(["resume", String(id), "--store", store], directory: directory)
                #expect(resumed.status == 0, "output:\n\(resumed.output)")
            }
        }
    }

    /// A run whose lease is held by a driver on another machine, expiring in `seconds`.
    private func runLeasedElsewhere(_ path: String, workspace: String, seconds: Double) async throws -> RunID {
        let id = RunID.make()
        try await SQLiteRunStore.withStore(path: path) { store in
            let configuration = RunConfiguration(model: "mock", workspace: workspace, tools: ["fs"])
            _ = try await store.createRun(id: id, goal: "Held elsewhere", configuration: configuration, at: Date())
            _ = try await store.acquireLease(
                on: id,
                owner: "another-host.example/4242/cafe",
                until: Date().addingTimeInterval(seconds),
                force: false,
                at: Date()
            )
        }
        return id
    }

    @Test func resumeWaitsOutAnExpiredRemoteLeaseAndTakesOver() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let id = try await runLeasedElsewhere(path, workspace: directory, seconds: 3)
            try await MockOpenAIServer.withServer(configuration: Self.mockConfiguration(latency: .zero)) { mock in
                let resumed = try await CLIProcess.run(
                    ["resume", id.rawValue, "--base-url", mock.baseURL, "--store", "sqlite:\(path)"],
                    directory: directory
                )
                #expect(resumed.status == 0, "output:\n\(resumed.output)")
                #expect(resumed.output.contains("waiting up to"))
            }
        }
    }

    @Test func resumeRefusesWhenTheRemoteDriverRenewsItsLease() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let id = try await runLeasedElsewhere(path, workspace: directory, seconds: 4)
            let resume = try CLIProcess(
                ["resume", id.rawValue, "--base-url", "http://127.0.0.1:1/v1", "--store", "sqlite:\(path)"],
                directory: directory
            )
            try await resume.waitUntil("it starts waiting for the lease") { resume.output.contains("waiting up to") }
            // The remote driver is alive: it renews its lease.
            try await SQLiteRunStore.withStore(path: path) { store in
                let held = try #require(try await store.lease(of: id))
                _ = try await store.renewLease(held, until: Date().addingTimeInterval(60))
            }
            #expect(await resume.wait() == 4, "output:\n\(resume.output)")
            #expect(resume.output.contains("is being driven by another-host.example/4242/cafe"))
        }
    }

    private func effectCount(_ workspace: String) throws -> Int {
        let text = (try? String(contentsOfFile: workspace + "/effects.log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").count
    }
}
