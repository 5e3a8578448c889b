import Foundation
import Testing
import Troupe
import TroupeTesting

/// Approvals through the API: listed for the caller's tenant, decided by operators, surviving a
/// restart of the server (the run waits in the store, not in a process).
@Suite struct ApprovalAPITests {
    static func gated(_ tool: CountingTool) throws -> ToolRegistry {
        try ToolRegistry([tool], policy: ToolPolicy(requireApproval: ["echo"]))
    }

    @Test func anApprovalSurvivesAServerRestartAndTheToolRunsOnce() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let tool = CountingTool(name: "echo", effect: .sideEffecting)
            let runID = try await SQLiteRunStore.open(path: path).closing { store in
                try await APITestServer.with(store: store, tools: try Self.gated(tool)) { api in
                    let run = try await api.client.createRun(body: .json(.init(goal: "Echo once"))).created.body.json
                    try await eventually("the run waits") {
                        try await api.client.getRun(path: .init(id: run.id)).ok.body.json.status == .waitingForApproval
                    }
                    return run.id
                }
            }
            #expect(tool.count == 0)

            // Another server process on the same store: the request is there, and deciding it lets a worker go on.
            try await SQLiteRunStore.open(path: path).closing { store in
                try await APITestServer.with(store: store, tools: try Self.gated(tool)) { api in
                    let listed = try await api.client.listApprovals().ok.body.json.approvals
                    #expect(listed.count == 1)
                    let approval = try #require(listed.first)
                    #expect(approval.runId == runID && approval.callKey == "s1:1:1" && approval.tool == "echo")
                    #expect(approval.status == .pending && approval.effect == .sideEffecting && approval.goal == "Echo once")

                    // Malformed decisions are refused before anything is written.
                    let noKey = try await api.send(.POST, "/v1/runs/\(runID)/approvals/nonsense", body: #"{"decision":"approve"}"#)
                    #expect(noKey.status == 400)
                    let reasonOnApprove = try await api.send(
                        .POST, "/v1/runs/\(runID)/approvals/s1:1:1", body: #"{"decision":"approve","reason":"x"}"#)
                    #expect(reasonOnApprove.status == 400)
                    let badEdit = try await api.send(
                        .POST, "/v1/runs/\(runID)/approvals/s1:1:1", body: #"{"decision":"edit","arguments":{"text":5}}"#)
                    #expect(
                        badEdit.status == 400 && APITestServer.error(badEdit.body)?.message.contains("schema of echo") == true,
                        "\(badEdit.body)")
                    let wrongCall = try await api.send(.POST, "/v1/runs/\(runID)/approvals/s1:1:9", body: #"{"decision":"approve"}"#)
                    #expect(wrongCall.status == 404)

                    let decided = try await api.send(
                        .POST, "/v1/runs/\(runID)/approvals/s1:1:1", body: #"{"decision":"edit","arguments":{"text":"edited"}}"#)
                    #expect(decided.status == 200, "\(decided.body)")
                    let document = try JSONValue.parse(decided.body)
                    #expect(document["approvals"]?.arrayValue?.first?["status"]?.stringValue == "edited")
                    #expect(document["approvals"]?.arrayValue?.first?["decidedBy"]?.stringValue == "api")
                    try await eventually("the run succeeds") {
                        try await api.client.getRun(path: .init(id: runID)).ok.body.json.status == .succeeded
                    }
                    #expect(tool.count == 1)
                    let again = try await api.send(.POST, "/v1/runs/\(runID)/approvals/s1:1:1", body: #"{"decision":"deny"}"#)
                    #expect(again.status == 409)
                    #expect(try await api.client.listApprovals().ok.body.json.approvals.isEmpty)
                    let read = try await api.client.getRun(path: .init(id: runID)).ok.body.json
                    let call = try #require(read.steps.first?.toolCalls.first)
                    #expect(call.result?.hasSuffix("echo: edited") == true)
                }
            }
        }
    }

    @Test func approvalsAreListedAndDecidedWithinTheCallersTenantOnly() async throws {
        let store = InMemoryRunStore()
        let now = Date()
        var keys: [String: String] = [:]
        for (name, tenant, role) in [
            ("acmeOperator", "acme", Role.operator), ("acmeViewer", "acme", .viewer), ("globex", "globex", .operator),
        ] {
            let made = try APIKeys.make(tenant: tenant, role: role, name: name, expiresAt: nil, at: now)
            try await store.createKey(made.record)
            keys[name] = made.key
        }
        let tool = CountingTool(name: "echo", effect: .sideEffecting)
        try await APITestServer.with(store: store, access: .keys(store), tools: try Self.gated(tool)) { api in
            func bearer(_ name: String) -> [(String, String)] { [("Authorization", "Bearer \(keys[name]!)")] }
            let created = try await api.send(.POST, "/v1/runs", body: #"{"goal":"Echo"}"#, headers: bearer("acmeOperator"))
            let runID = try #require(try JSONValue.parse(created.body)["id"]?.stringValue)
            try await eventually("the run waits") {
                try await store.requireRun(RunID(runID)).status == .waitingForApproval
            }
            let mine = try await api.send(.GET, "/v1/approvals", headers: bearer("acmeViewer"))
            let mineListed = try JSONValue.parse(mine.body)["approvals"]?.arrayValue
            #expect(mine.status == 200 && mineListed?.count == 1)
            let theirs = try await api.send(.GET, "/v1/approvals", headers: bearer("globex"))
            let theirsListed = try JSONValue.parse(theirs.body)["approvals"]?.arrayValue
            #expect(theirs.status == 200 && theirsListed?.count == 0)
            let path = "/v1/runs/\(runID)/approvals/s1:1:1"
            #expect(try await api.send(.POST, path, body: #"{"decision":"approve"}"#, headers: bearer("globex")).status == 404)
            #expect(try await api.send(.POST, path, body: #"{"decision":"approve"}"#, headers: bearer("acmeViewer")).status == 403)
            let denied = try await api.send(
                .POST, path, body: #"{"decision":"deny","reason":"not today"}"#, headers: bearer("acmeOperator"))
            #expect(denied.status == 200)
            let operatorKey = try #require(try await store.keys(tenant: "acme").first { $0.name == "acmeOperator" })
            let decider = try JSONValue.parse(denied.body)["approvals"]?.arrayValue?.first?["decidedBy"]?.stringValue
            #expect(decider == operatorKey.id)
            try await eventually("the run succeeds") { try await store.requireRun(RunID(runID)).status == .succeeded }
            #expect(tool.count == 0)
        }
    }

    @Test func aReadOnlyRunIsRequestedThroughTheAPI() async throws {
        let store = InMemoryRunStore()
        try await APITestServer.with(store: store) { api in
            let run = try await api.client.createRun(body: .json(.init(goal: "Look", readOnly: true))).created.body.json
            #expect(run.configuration.additionalProperties.value["readOnly"] as? Bool == true)
        }
    }
}
