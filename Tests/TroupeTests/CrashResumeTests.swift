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
                replacing: nil,
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

    /// Issue 19, item 4: a quiet command (`sleep 5 && git push`) must not outlive a driver killed
    /// with SIGKILL and complete after the run was parked.
    @Test func item4_aToolsProgramDiesWithItsKilledDriver() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = directory + "/workspace"
            try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
            try "tools:\n  shell:\n    allowedPrograms: [sleep]\n".write(
                toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
            // A duration no other process on the machine sleeps for, to find this one by.
            let marker = "47.\(Int.random(in: 100_000...999_999))"
            let configuration = MockOpenAIServer.Configuration(
                planSteps: 1, latency: .zero, planTools: ["shell_run"],
                arguments: { tool, _ in tool == "shell_run" ? ["command": ["sleep", .string(marker)]] : nil }
            )
            try await MockOpenAIServer.withServer(configuration: configuration) { mock in
                let run = try CLIProcess(
                    [
                        "run", "Sleep", "--base-url", mock.baseURL, "--model", "mock", "--workspace", workspace, "--tools", "shell",
                        "--store", "sqlite:\(directory)/runs.db",
                    ],
                    directory: directory
                )
                try await run.waitUntil("the command started") { !processes(withArgument: marker).isEmpty }
                // The command is registered with the guardian just after it starts (a window of
                // microseconds, documented): kill once the guardian exists, and a moment later.
                try await run.waitUntil("the guardian started") {
                    !processes(withArgument: "troupe-guardian", parent: run.process.processIdentifier).isEmpty
                }
                try await Task.sleep(for: .milliseconds(100))
                run.kill(SIGKILL)
                _ = await run.wait()
                let deadline = ContinuousClock.now + .seconds(20)
                while !processes(withArgument: marker).isEmpty && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(processes(withArgument: marker).isEmpty, "the command outlived its driver")
            }
        }
    }

    /// Live processes (not zombies) with `argument` on their command line (and `parent`, if given).
    private func processes(withArgument argument: String, parent: Int32? = nil) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> Int32? in
            guard let pid = Int32(entry),
                let commandLine = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
                commandLine.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == argument }),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")"), !stat[close...].hasPrefix(") Z"),
                parent.map({ String($0) == stat[close...].split(separator: " ").dropFirst(2).first.map(String.init) }) ?? true
            else { return nil }
            return pid
        }
    }

    private func effectCount(_ workspace: String) throws -> Int {
        let text = (try? String(contentsOfFile: workspace + "/effects.log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").count
    }
}
