import Foundation
import Testing
import Troupe
import TroupeTesting

/// Malformed model output of every kind ends in a repair or a clear, recorded failure — never a
/// crash, a hang, or a lost journal. These go through the real HTTP client and SQLite journal.
@Suite struct MalformedModelOutputTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var reply: MockOpenAIServer.Reply
        var status: RunStatus
        var errorCode: TroupeError.Code?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "body is not JSON", reply: .http(status: 200, body: "<html>oops</html>"), status: .succeeded),
        Case(name: "empty choices", reply: .http(status: 200, body: #"{"id":"x","choices":[]}"#), status: .succeeded),
        Case(name: "plan is prose", reply: .content("I think we should first look around."), status: .succeeded),
        Case(name: "plan has wrong schema", reply: .content(#"{"steps":[{"id":"s1"}]}"#), status: .succeeded),
        Case(name: "plan has no steps", reply: .content(#"{"steps":[]}"#), status: .succeeded),
        Case(
            name: "plan names unknown tool",
            reply: .content(#"{"steps":[{"id":"s1","title":"t","instruction":"i","tools":["rm_rf"],"dependsOn":[]}]}"#),
            status: .succeeded
        ),
        Case(
            name: "plan has a cycle",
            reply: .content(
                #"{"steps":[{"id":"a","title":"t","instruction":"i","tools":[],"dependsOn":["b"]},"#
                    + #"{"id":"b","title":"t","instruction":"i","tools":[],"dependsOn":["a"]}]}"#
            ),
            status: .succeeded
        ),
        Case(name: "plan cut off (length)", reply: .content(#"{"steps":[{"id":"s1","tit"#, finishReason: "length"), status: .succeeded),
        Case(name: "content filter", reply: .content("", finishReason: "content_filter"), status: .failed, errorCode: .contentFiltered),
        Case(
            name: "HTTP 400",
            reply: .http(status: 400, body: #"{"error":{"message":"model 'x' does not exist","type":"invalid_request_error"}}"#),
            status: .failed,
            errorCode: .planInvalid
        ),
        Case(
            name: "HTTP 401", reply: .http(status: 401, body: #"{"error":{"message":"bad key"}}"#), status: .failed, errorCode: .planInvalid
        ),
    ]

    @Test(arguments: cases, [false, true])
    func plannerReplyEndsInRepairOrRecordedFailure(_ testCase: Case, stream: Bool) async throws {
        try await withTemporaryDirectory { directory in
            try await MockOpenAIServer.withServer(configuration: .init(planSteps: 2, planTools: ["echo"])) { mock in
                mock.enqueue(testCase.reply)
                let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "mock"))
                try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                    let driver = try makeDriver(store: store, model: model, tools: [CountingTool()])
                    var configuration = RunConfiguration(model: "mock")
                    configuration.stream = stream
                    let final = try await driver.run(goal: "Echo things", configuration: configuration)
                    #expect(final.status == testCase.status)
                    if let code = testCase.errorCode { #expect(final.error?.code == code) }
                    if final.status == .failed { #expect(!(final.error?.message.isEmpty ?? true)) }

                    let folded = try RunStateMachine(runID: final.runID, replaying: try await store.events(of: final.runID))
                    #expect(folded.status == final.status)
                    #expect(folded.steps == final.steps)
                    #expect(try await store.requireRun(final.runID).status == final.status)
                }
            }
        }
    }

    @Test func plannerThatNeverProducesAValidPlanFailsWithItsProblems() async throws {
        let model = ScriptedModel(Array(repeating: .response(.text("no plan here")), count: 3))
        let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [])
            .run(goal: "x", configuration: RunConfiguration(model: "m", maxPlanRepairs: 2))
        #expect(final.status == .failed)
        #expect(final.error?.code == .planInvalid)
        #expect(final.error?.message.contains("after 3 attempts") == true)
        #expect(model.requests.count == 3)
        // Each repair request carries the previous answer and what was wrong with it.
        let last = try #require(model.requests.last)
        #expect(last.messages.contains { $0.role == .user && ($0.content ?? "").contains("Your plan was rejected") })
    }

    @Test func toolCallProblemsGoBackToTheModelAsToolResults() async throws {
        let echo = CountingTool()
        let model = ScriptedModel([
            .response(.plan(plan([("s1", ["echo"], [])]))),
            .response(
                .toolCalls([("no_such_tool", "{}"), ("echo", "{not json"), ("echo", #"{"text": 42}"#), ("echo", #"{"text":"ok"}"#)])),
            .response(.text("handled")),
        ])
        let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [echo])
            .run(goal: "x", configuration: RunConfiguration(model: "m"))
        #expect(final.status == .succeeded)
        #expect(echo.count == 1)
        let toolMessages = try #require(model.requests.last?.messages.filter { $0.role == .tool })
        #expect(toolMessages.count == 4)
        #expect(toolMessages[0].content?.contains("Unknown tool 'no_such_tool'") == true)
        #expect(toolMessages[1].content?.contains("not valid JSON") == true)
        #expect(toolMessages[2].content?.contains("$.text: expected string, got integer") == true)
        #expect(toolMessages[3].content == "echo: ok")
    }

    @Test func toolArgumentsCutOffAtTheTokenLimitAreExplained() async throws {
        var cut = ChatResponse.toolCall("echo", #"{"text": "a very long te"#)
        cut.finishReason = .length
        let model = ScriptedModel([.response(.plan(plan([("s1", ["echo"], [])]))), .response(cut), .response(.text("gave up"))])
        let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [CountingTool()])
            .run(goal: "x", configuration: RunConfiguration(model: "m"))
        #expect(final.status == .succeeded)
        let result = try #require(model.requests.last?.messages.last?.content)
        #expect(result.contains("not valid JSON") && result.contains("cut off at the output token limit"))
    }

    @Test func toolThatThrowsBecomesAnErrorResult() async throws {
        struct Failing: Tool {
            let name = "explode"
            let description = "Always fails."
            let effect = ToolEffect.readOnly
            let parameters: JSONSchema = .object([])
            func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
                throw TroupeError(.toolFailed, "the disk is on fire")
            }
        }
        let model = ScriptedModel([
            .response(.plan(plan([("s1", [], [])]))),
            .response(.toolCall("explode", "{}")),
            .response(.text("reported the failure")),
        ])
        let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [Failing()])
            .run(goal: "x", configuration: RunConfiguration(model: "m"))
        #expect(final.status == .succeeded)
        #expect(model.requests.last?.messages.last?.content == "Error: the disk is on fire")
    }

    @Test func contentFilterInAStepTriggersReplanning() async throws {
        let model = ScriptedModel([
            .response(.plan(plan([("s1", [], []), ("s2", [], ["s1"])]))),
            .response(.text("first ok")),
            .response(ChatResponse(message: .assistant(nil), finishReason: .contentFilter)),
            .response(.plan(plan([("s3", [], ["s1"])]))),
            .response(.text("third ok")),
        ])
        let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [])
            .run(goal: "x", configuration: RunConfiguration(model: "m"))
        #expect(final.status == .succeeded)
        #expect(final.answer == "third ok")
        #expect(final.planRound == 1)
        #expect(final.steps.map(\.status) == [.succeeded, .failed, .succeeded])
        let replanRequest = model.requests[3]
        #expect(replanRequest.metadata["troupe.purpose"] == "replan")
        #expect(replanRequest.messages.last?.content?.contains("content filter") == true)
        #expect(replanRequest.messages.last?.content?.contains("first ok") == true)
    }

    @Test func stepThatKeepsCallingToolsGetsAFinalTurnWithoutTools() async throws {
        let echo = CountingTool()
        var replies: [ScriptedModel.Reply] = [.response(.plan(plan([("s1", ["echo"], [])])))]
        replies += Array(repeating: .response(.toolCall("echo", #"{"text":"again"}"#)), count: 3)
        replies.append(.response(.text("best effort")))
        let model = ScriptedModel(replies)
        let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [echo])
            .run(goal: "x", configuration: RunConfiguration(model: "m", maxIterations: 3))
        #expect(final.status == .succeeded)
        #expect(final.answer == "best effort")
        #expect(echo.count == 3)
        let last = try #require(model.requests.last)
        #expect(last.tools.isEmpty)
        #expect(last.messages.last?.content?.contains("without calling tools") == true)
    }

    @Test func failingStepWithoutReplansLeftFailsTheRun() async throws {
        let model = ScriptedModel([
            .response(.plan(plan([("s1", [], [])]))),
            .failure(TroupeError(.authentication, "bad key")),
        ])
        let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [])
            .run(goal: "x", configuration: RunConfiguration(model: "m", maxReplans: 0))
        #expect(final.status == .failed)
        #expect(final.error?.code == .stepFailed)
        #expect(final.error?.message.contains("bad key") == true)
    }
}

@Suite struct ReplanningTests {
    @Test func replanMayReuseTheIdOfTheFailedStep() async throws {
        let model = ScriptedModel([
            .response(.plan(plan([("s1", [], [])]))),
            .response(ChatResponse(message: .assistant(nil), finishReason: .contentFilter)),
            .response(.plan(plan([("s1", [], [])]))),
            .response(.text("second try ok")),
        ])
        let store = InMemoryRunStore()
        let final = try await makeDriver(store: store, model: model, tools: [])
            .run(goal: "x", configuration: RunConfiguration(model: "m"))
        #expect(final.status == .succeeded)
        #expect(final.steps.map(\.status) == [.failed, .succeeded])
        #expect(final.steps.map(\.attempt) == [1, 2])
        let folded = try RunStateMachine(runID: final.runID, replaying: try await store.events(of: final.runID))
        #expect(folded.steps == final.steps)
        let report = RunReport(summary: try await store.requireRun(final.runID), machine: folded)
        #expect(report.steps.map(\.modelCalls) == [1, 1])
        #expect(report.steps.map(\.status) == ["failed", "succeeded"])
    }
}

@Suite struct RunReportTests {
    @Test func failedModelCallsAreReportedWhereTheyHappened() async throws {
        let model = ScriptedModel([
            .failure(TroupeError(.transport, "connection reset")),
            .response(.plan(plan([("s1", [], [])]))),
            .failure(TroupeError(.modelAPI, "HTTP 503")),
            .response(.text("ok")),
        ])
        let store = InMemoryRunStore()
        let final = try await makeDriver(store: store, model: model, tools: [])
            .run(goal: "x", configuration: RunConfiguration(model: "m"))
        #expect(final.status == .succeeded)
        let report = RunReport(summary: try await store.requireRun(final.runID), machine: final)
        #expect(report.planningErrors == ["plan/0/0: transport: connection reset"])
        #expect(report.steps.first?.modelErrors == ["s1/1/0: modelAPI: HTTP 503"])
        #expect(report.steps.first?.modelCalls == 1)
    }
}
