import Foundation
import Testing
import Troupe
import TroupeTesting

/// The CLI's public contract: JSON fields, exit codes, and the offline demo.
@Suite struct CLITests {
    /// The demo as a user without privileges (when the tests run as root, as `nobody`): the mock
    /// server once set TCP_NODELAY at the socket level, which is SO_DEBUG there — allowed to root
    /// only — and closed every connection for everyone else.
    @Test func theDemoRunsForAnUnprivilegedUser() async throws {
        try await withTemporaryDirectory { directory in
            chmod(directory, 0o777)
            let process = Process()
            if getuid() == 0 {
                guard FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else { return }
                process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
                process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", try troupeExecutable()]
            } else {
                process.executableURL = URL(fileURLWithPath: try troupeExecutable())
                process.arguments = []
            }
            process.arguments! += ["demo", "--store", "sqlite:\(directory)/runs.db"]
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let text = String(decoding: try output.fileHandleForReading.readToEnd() ?? Data(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "\(text)")
            #expect(text.components(separatedBy: "✓").count == 4, "three steps done:\n\(text)")
        }
    }

    @Test func demoRunsOfflineAndShowPrintsTheRun() async throws {
        try await withTemporaryDirectory { directory in
            let store = "sqlite:\(directory)/runs.db"
            let demo = try await CLIProcess.run(["demo", "--store", store], directory: directory)
            #expect(demo.status == 0, "demo output:\n\(demo.output)")
            #expect(demo.output.contains("local deterministic mock"))
            #expect(demo.output.contains("OPENAI_API_KEY"))
            #expect(demo.output.contains("▸ succeeded"))
            #expect(demo.output.contains("# Open tasks"))

            let runs = try await CLIProcess.run(["runs", "--json", "--store", store], directory: directory)
            #expect(runs.status == 0)
            let list = try JSONValue.parse(runs.output).arrayValue ?? []
            #expect(list.count == 1)
            let run = try #require(list.first)
            for field in ["id", "status", "goal", "createdAt", "usage"] { #expect(run[field] != nil, "runs --json lacks \(field)") }
            #expect(run["status"] == "succeeded")
            #expect((run["usage"]?["inputTokens"]?.intValue ?? 0) > 0)
            let id = try #require(run["id"]?.stringValue)

            let show = try await CLIProcess.run(["show", id, "--json", "--store", store], directory: directory)
            #expect(show.status == 0)
            let document = try JSONValue.parse(show.output)
            #expect(document["id"]?.stringValue == id)
            let steps = document["steps"]?.arrayValue ?? []
            #expect(steps.count == 3)
            let call = try #require(steps.first?["toolCalls"]?.arrayValue?.first)
            #expect(call["name"] == "fs_list")
            #expect(call["arguments"] == ["path": "notes"])
            #expect(call["result"]?.stringValue?.contains("todo.md") == true)

            let text = try await CLIProcess.run(["show", id, "--store", store], directory: directory)
            #expect(text.output.contains("fs_read({\"path\":\"notes/todo.md\"})"))
            #expect(text.output.contains("Answer:"))
        }
    }

    @Test func migrateOnASQLiteStore() async throws {
        try await withTemporaryDirectory { directory in
            let store = "sqlite:\(directory)/runs.db"
            let dry = try await CLIProcess.run(["migrate", "--dry-run", "--store", store], directory: directory)
            #expect(dry.status == 0 && dry.output.contains("-- migration 2"), "output:\n\(dry.output)")
            #expect(!FileManager.default.fileExists(atPath: directory + "/runs.db"), "a dry run creates nothing")
            let applied = try await CLIProcess.run(["migrate", "--store", store], directory: directory)
            #expect(applied.status == 0 && applied.output.contains("applied migrations 1, 2, 3, 4"), "output:\n\(applied.output)")
            let again = try await CLIProcess.run(["migrate", "--store", store], directory: directory)
            #expect(again.output.contains("nothing to do"))
        }
    }

    @Test func exitCodesAreDocumented() async throws {
        try await withTemporaryDirectory { directory in
            let store = "sqlite:\(directory)/runs.db"
            #expect(try await CLIProcess.run(["show", "run_missing", "--store", store], directory: directory).status == 5)
            #expect(try await CLIProcess.run(["runs", "--status", "bogus", "--store", store], directory: directory).status == 6)
            let noKey = try await CLIProcess.run(["run", "goal", "--store", store], directory: directory)
            #expect(noKey.status == 6)
            #expect(noKey.output.contains("OPENAI_API_KEY is not set"))
            let badTools = try await CLIProcess.run(["run", "goal", "--tools", "teleport", "--store", store], directory: directory)
            #expect(badTools.status == 6)
            #expect(try await CLIProcess.run(["run", "goal", "--store", "postgres://x"], directory: directory).status == 6)
            #expect(try await CLIProcess.run(["run"], directory: directory).status == 64)
        }
    }

    /// `--tools` takes single tools beside groups: the model is offered exactly those.
    @Test func singleToolsAreOfferedAlone() async throws {
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 1)) { mock in
            try await withTemporaryDirectory { directory in
                let run = try await CLIProcess.run(
                    [
                        "run", "List the files", "--tools", "fs_list, web", "--base-url", mock.baseURL, "--store",
                        "sqlite:\(directory)/runs.db",
                    ],
                    directory: directory)
                #expect(run.status == 0, "output:\n\(run.output)")
                // The planner is told of both; no other file tool is offered to anyone.
                let planner = try #require(mock.requests.first?["messages"]?.arrayValue?.first?["content"]?.stringValue)
                #expect(planner.contains("fs_list") && planner.contains("web_fetch") && !planner.contains("fs_read"))
                let offered = mock.requests.flatMap { $0["tools"]?.arrayValue ?? [] }.compactMap { $0["function"]?["name"]?.stringValue }
                #expect(!offered.isEmpty && Set(offered).isSubset(of: ["fs_list", "web_fetch"]))
                let missing = try await CLIProcess.run(
                    ["run", "x", "--tools", "mcp:nowhere/tool", "--base-url", mock.baseURL, "--store", "sqlite:\(directory)/runs.db"],
                    directory: directory)
                #expect(missing.status == 6 && missing.output.contains("no MCP server named 'nowhere'"), "\(missing.output)")
            }
        }
    }

    /// `troupe.yaml` in the working directory sets the model, a dead primary endpoint and a
    /// fallback to the mock: the run succeeds through the fallback, and says so.
    @Test func theSettingsFileShapesTheRunAndItsFallbacks() async throws {
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 1)) { mock in
            try await withTemporaryDirectory { directory in
                let yaml = """
                    model:
                      name: primary-model
                      baseURL: http://127.0.0.1:1/v1
                      fallbacks: [backup]
                      retry: {maxAttempts: 1}
                    endpoints:
                      backup: {baseURL: "\(mock.baseURL)", model: backup-model}
                    run:
                      tools: none
                      maxSteps: 3
                    """
                try yaml.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
                let store = "sqlite:\(directory)/runs.db"
                // The workspace is elsewhere, so the model of this run could not have written ./troupe.yaml: it is read.
                try FileManager.default.createDirectory(atPath: directory + "/work", withIntermediateDirectories: true)
                let run = try await CLIProcess.run(
                    ["run", "Say hello", "--json", "--store", store, "--workspace", directory + "/work"], directory: directory)
                #expect(run.status == 0, "output:\n\(run.output)")
                let report = try JSONValue.parse(run.output)
                #expect(report["configuration"]?["model"] == "primary-model")
                #expect(report["configuration"]?["maxSteps"] == 3)
                let retries = report["planningRetries"]?.arrayValue?.compactMap(\.stringValue) ?? []
                #expect(retries.contains { $0.contains("connection refused") && $0.contains("fell back to backup-model@\(mock.baseURL)") })
                #expect(mock.requestCount >= 2)

                let id = try #require(report["id"]?.stringValue)
                let show = try await CLIProcess.run(["show", id, "--store", store], directory: directory)
                #expect(show.output.contains("↷ planner"))

                let bad = try await CLIProcess.run(
                    ["runs", "--store", store, "--set", "model.retry.maxAttempts=0"], directory: directory)
                #expect(bad.status == 6)
                #expect(bad.output.contains("Setting model.retry.maxAttempts from --set must be between 1 and 100 (got 0)."))
                let unknown = try await CLIProcess.run(
                    ["runs", "--store", store], directory: directory, environment: ["TROUPE_CONFIG": directory + "/missing.yaml"])
                #expect(unknown.status == 6)
            }
        }
    }

    @Test func failedRunExitsOneAndCancelOfAFinishedRunSaysSo() async throws {
        try await withTemporaryDirectory { directory in
            let store = "sqlite:\(directory)/runs.db"
            try await MockOpenAIServer.withServer { mock in
                mock.enqueue(.http(status: 401, body: #"{"error":{"message":"invalid api key"}}"#))
                let failed = try await CLIProcess.run(
                    ["run", "goal", "--base-url", mock.baseURL, "--workspace", directory, "--store", store, "--json"],
                    directory: directory
                )
                #expect(failed.status == 1, "output:\n\(failed.output)")
                let document = try JSONValue.parse(failed.output)
                #expect(document["status"] == "failed")
                #expect(document["error"]?["message"]?.stringValue?.contains("invalid api key") == true)
                let id = try #require(document["id"]?.stringValue)
                let cancel = try await CLIProcess.run(["cancel", id, "--store", store], directory: directory)
                #expect(cancel.status == 1)
                #expect(cancel.output.contains("already failed"))
            }
        }
    }

    @Test func cancelStopsARunAndResumeRefusesIt() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let id = RunID.make()
            try await SQLiteRunStore.withStore(path: path) { store in
                _ = try await store.createRun(
                    id: id, goal: "g", configuration: RunConfiguration(model: "m", workspace: directory), at: Date())
            }
            let cancel = try await CLIProcess.run(
                ["cancel", id.rawValue, "--reason", "changed my mind", "--store", "sqlite:\(path)"], directory: directory)
            #expect(cancel.status == 0)
            let summary = try await SQLiteRunStore.withStore(path: path) { try await $0.requireRun(id) }
            #expect(summary.status == .cancelled)
            #expect(summary.error?.message == "changed my mind")
            let resume = try await CLIProcess.run(["resume", id.rawValue, "--store", "sqlite:\(path)"], directory: directory)
            #expect(resume.status == 3)
            #expect(resume.output.contains("already cancelled"))
        }
    }

    @Test func resumeOfARunThatNeedsAttentionExplainsAndSkipFinishesIt() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            // A journal whose side-effecting fs_append was in flight when its process died.
            let id = RunID.make()
            let configuration = RunConfiguration(model: "mock", workspace: directory, tools: ["fs"])
            let planKey = ActivityKey(step: "plan", attempt: 0, callIndex: 0)
            let turnKey = ActivityKey(step: "s1", attempt: 1, callIndex: 0)
            let toolKey = ActivityKey(step: "s1", attempt: 1, callIndex: 1)
            let thePlan = Plan(steps: [PlanStep(id: "s1", title: "Append", instruction: "Append a line", tools: ["fs_append"])])
            try await SQLiteRunStore.withStore(path: path) { store in
                _ = try await store.createRun(id: id, goal: "append", configuration: configuration, at: Date())
                _ = try await store.append(
                    [
                        .leaseAcquired(owner: "gone/1/x"), .activityStarted(key: planKey, kind: .model(purpose: .plan)),
                        .activityCompleted(key: planKey, result: .model(.plan(thePlan))), .planProposed(round: 0, plan: thePlan),
                        .stepStarted(stepID: "s1", attempt: 1), .activityStarted(key: turnKey, kind: .model(purpose: .execute)),
                        .activityCompleted(key: turnKey, result: .model(.toolCall("fs_append", #"{"path":"log.txt","content":"x"}"#))),
                        .activityStarted(key: toolKey, kind: .tool(name: "fs_append", callID: "call_0", effect: .sideEffecting)),
                    ],
                    to: id,
                    expectedSequence: 1,
                    at: Date()
                )
            }
            try await MockOpenAIServer.withServer { mock in
                let store = "sqlite:\(path)"
                let parked = try await CLIProcess.run(
                    ["resume", id.rawValue, "--base-url", mock.baseURL, "--store", store], directory: directory)
                #expect(parked.status == 2, "output:\n\(parked.output)")
                #expect(parked.output.contains("--retry"))
                let waiting = try await CLIProcess.run(["resume", id.rawValue, "--store", store], directory: directory)
                #expect(waiting.status == 2)
                #expect(waiting.output.contains("needs attention"))
                let skipped = try await CLIProcess.run(
                    ["resume", id.rawValue, "--skip", "--base-url", mock.baseURL, "--store", store],
                    directory: directory
                )
                #expect(skipped.status == 0, "output:\n\(skipped.output)")
                #expect(!FileManager.default.fileExists(atPath: directory + "/log.txt"))
                #expect(mock.requestCount == 1)
            }
        }
    }

    @Test func mockServerCommandServesRunsUntilInterrupted() async throws {
        try await withTemporaryDirectory { directory in
            let server = try CLIProcess(["mock-server", "--steps", "2"], directory: directory)
            try await server.waitUntil("the server prints its URL") { server.output.contains("/v1") }
            let url = try #require(server.output.split(separator: " ").first { $0.hasPrefix("http://127.0.0.1:") })
            let run = try await CLIProcess.run(
                ["run", "anything", "--base-url", String(url), "--workspace", directory, "--store", "sqlite:\(directory)/runs.db"],
                directory: directory
            )
            #expect(run.status == 0, "output:\n\(run.output)")
            server.kill(SIGINT)
            #expect(await server.wait() == 0)
            #expect(server.output.contains("served 5 requests"))
        }
    }
}
