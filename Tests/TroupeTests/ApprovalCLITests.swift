import Foundation
import Testing
import Troupe
import TroupeTesting

/// `troupe run` without a terminal leaves a gated call waiting (exit 2, with how to decide),
/// `troupe approvals` lists it, `troupe approve` decides it, and `troupe resume` carries it out.
@Suite struct ApprovalCLITests {
    @Test func aGatedWriteWaitsIsEditedThenRunsOnResume() async throws {
        let mockConfiguration = MockOpenAIServer.Configuration(planSteps: 1) { tool, _ in
            tool == "fs_write" ? .object(["path": .string("note.txt"), "content": .string("from the model")]) : nil
        }
        try await MockOpenAIServer.withServer(configuration: mockConfiguration) { mock in
            try await withTemporaryDirectory { directory in
                try FileManager.default.createDirectory(atPath: directory + "/ws", withIntermediateDirectories: true)
                try "tools:\n  requireApproval: [fs_write]\n".write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
                let store = "sqlite:\(directory)/runs.db"
                let run = try await CLIProcess.run(
                    [
                        "run", "Write a note", "--tools", "fs_write", "--workspace", "ws", "--base-url", mock.baseURL, "--store", store,
                    ], directory: directory)
                #expect(run.status == 2, "output:\n\(run.output)")
                #expect(run.output.contains("waits for approval: call s1:1:1"), "\(run.output)")
                #expect(run.output.contains("waiting for approval:") && run.output.contains("troupe approve run_"), "\(run.output)")
                #expect(!FileManager.default.fileExists(atPath: directory + "/ws/note.txt"))

                let listed = try await CLIProcess.runApart(["approvals", "--json", "--store", store], directory: directory)
                #expect(listed.status == 0, "\(listed.errors)")
                let approvals = try #require(try JSONValue.parse(listed.output).arrayValue)
                #expect(approvals.count == 1)
                let runID = try #require(approvals.first?["runId"]?.stringValue)
                #expect(approvals.first?["callKey"]?.stringValue == "s1:1:1" && approvals.first?["tool"]?.stringValue == "fs_write")

                // Still waiting: resume says so and changes nothing.
                let early = try await CLIProcess.run(["resume", runID, "--store", store], directory: directory)
                #expect(early.status == 2 && early.output.contains("waiting for approval:"), "\(early.output)")

                let badEdit = try await CLIProcess.run(
                    ["approve", runID, "--edit", #"{"path": 7}"#, "--store", store], directory: directory)
                #expect(badEdit.status == 6 && badEdit.output.contains("schema of fs_write"), "\(badEdit.output)")
                let edited = try await CLIProcess.run(
                    [
                        "approve", runID, "--call", "s1/1/1", "--edit", #"{"path": "edited.txt", "content": "from a person"}"#, "--store",
                        store,
                    ],
                    directory: directory)
                #expect(edited.status == 0 && edited.output.contains("fs_write (s1:1:1) of run \(runID): edited"), "\(edited.output)")
                let twice = try await CLIProcess.run(
                    ["approve", runID, "--call", "s1:1:1", "--deny", "--store", store], directory: directory)
                #expect(twice.status == 6 && twice.output.contains("already decided (edit by cli:"), "\(twice.output)")
                let nothing = try await CLIProcess.run(["approve", runID, "--store", store], directory: directory)
                #expect(nothing.status == 5 && nothing.output.contains("has no call waiting for approval"), "\(nothing.output)")

                let resumed = try await CLIProcess.run(["resume", runID, "--store", store], directory: directory)
                #expect(resumed.status == 0, "\(resumed.output)")
                #expect(try String(contentsOfFile: directory + "/ws/edited.txt", encoding: .utf8) == "from a person")
                #expect(!FileManager.default.fileExists(atPath: directory + "/ws/note.txt"))

                let shown = try await CLIProcess.run(["show", runID, "--store", store], directory: directory)
                #expect(shown.output.contains("[edited] s1:1:1 fs_write") && shown.output.contains("by cli:"), "\(shown.output)")
                let none = try await CLIProcess.run(["approvals", "--store", store], directory: directory)
                #expect(none.status == 0 && none.output.contains("No call waits for approval."))
            }
        }
    }

    @Test func aReadOnlyRunIsOfferedNoWritingTool() async throws {
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 1)) { mock in
            try await withTemporaryDirectory { directory in
                let run = try await CLIProcess.run(
                    [
                        "run", "Look around", "--tools", "fs", "--read-only", "--base-url", mock.baseURL, "--store",
                        "sqlite:\(directory)/runs.db",
                    ],
                    directory: directory)
                #expect(run.status == 0, "output:\n\(run.output)")
                let offered = Set(
                    mock.requests.flatMap { $0["tools"]?.arrayValue ?? [] }.compactMap { $0["function"]?["name"]?.stringValue })
                #expect(!offered.isEmpty && offered.isSubset(of: ["fs_read", "fs_list", "fs_search"]), "\(offered)")
            }
        }
    }

    @Test func approvalsThroughAServer() async throws {
        let mockConfiguration = MockOpenAIServer.Configuration(planSteps: 1) { tool, _ in
            tool == "fs_write" ? .object(["path": .string("note.txt"), "content": .string("approved")]) : nil
        }
        try await MockOpenAIServer.withServer(configuration: mockConfiguration) { mock in
            try await withTemporaryDirectory { directory in
                let store = "sqlite:\(directory)/runs.db"
                try "tools:\n  requireApproval: [fs_write]\n".write(toFile: directory + "/settings.yaml", atomically: true, encoding: .utf8)
                let made = try await CLIProcess.runApart(
                    ["keys", "create", "--tenant", "acme", "--role", "operator", "--store", store], directory: directory)
                let key = try #require(made.output.split(separator: "\n").last.map(String.init))
                let serve = try CLIProcess(
                    [
                        "serve", "--port", "0", "--store", store, "--config", directory + "/settings.yaml", "--set",
                        "model.baseURL=\(mock.baseURL)", "--set", "model.name=mock", "--set",
                        "server.workspaceRoot=\(directory)/workspaces",
                        "--set", "worker.pollInterval=0.1",
                    ], directory: directory, separateErrors: true)
                defer { if serve.process.isRunning { serve.kill(SIGKILL) } }
                try await serve.waitUntil("the server listens") { serve.errorOutput.contains("listening on http://127.0.0.1:") }
                let log = serve.errorOutput
                let address = try #require(log.range(of: "listening on http://127.0.0.1:"))
                let environment = [
                    "TROUPE_SERVER": "http://127.0.0.1:" + log[address.upperBound...].prefix { $0.isNumber }, "TROUPE_API_KEY": key,
                ]

                let followed = try await CLIProcess.runApart(
                    ["submit", "Write a note", "--tools", "fs_write", "--follow"], directory: directory, environment: environment)
                #expect(followed.status == 2, "\(followed.output)\(followed.errors)")
                #expect(followed.output.contains("waiting for approval:") && followed.output.contains("--server http://127.0.0.1:"))
                let listed = try await CLIProcess.runApart(["approvals", "--json"], directory: directory, environment: environment)
                let approvals = try #require(try JSONValue.parse(listed.output).arrayValue, "\(listed.output)\(listed.errors)")
                #expect(approvals.count == 1 && approvals.first?["tenant"] == "acme" && approvals.first?["status"] == "pending")
                let runID = try #require(approvals.first?["runId"]?.stringValue)

                let approved = try await CLIProcess.runApart(["approve", runID], directory: directory, environment: environment)
                #expect(
                    approved.status == 0 && approved.output.contains("fs_write (s1:1:1) of run \(runID): approved"), "\(approved.errors)")
                try await eventually("the run succeeds") {
                    let shown = try await CLIProcess.runApart(["show", runID, "--json"], directory: directory, environment: environment)
                    return (try? JSONValue.parse(shown.output))?["status"] == "succeeded"
                }
                #expect(try String(contentsOfFile: "\(directory)/workspaces/\(runID)/note.txt", encoding: .utf8) == "approved")
                let again = try await CLIProcess.runApart(
                    ["approve", runID, "--call", "s1:1:1", "--deny"], directory: directory, environment: environment)
                #expect(again.status == 6, "\(again.errors)")
                serve.kill(SIGTERM)
                #expect(await serve.wait() == 0)
            }
        }
    }
}
