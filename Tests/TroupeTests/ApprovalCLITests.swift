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
}
