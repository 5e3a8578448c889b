import Foundation
import Synchronization
import Testing
import Troupe
import TroupeTesting

/// Durable human approval gates: a call of a tool that needs approval waits in the journal (no
/// process holds the run) until a person decides; it runs exactly once after an approval (with
/// edited arguments if so decided), never after a denial, and a timeout applies its default.
@Suite struct ApprovalTests {
    static let gatedKey = ActivityKey(step: "s1", attempt: 1, callIndex: 1)

    /// An in-process approver that answers from a list, recording what it was asked.
    struct Approver: ToolApprover {
        let identity = "test-approver"
        var answer: ToolApproval
        let seen = Recorder<String>()

        func review(_ request: ApprovalRequest, context: ToolContext) async -> ToolApproval {
            seen.add("\(request.call.name) \(request.call.arguments) \(context.stepID)")
            return answer
        }
    }

    static func script(_ calls: [(name: String, arguments: String)] = [("send", #"{"text":"hi"}"#)]) -> ScriptedModel {
        ScriptedModel([
            .response(.plan(plan([("s1", [], [])]))),
            .response(.toolCalls(calls)),
            .response(.text("done")),
        ])
    }

    static func driver(
        _ store: any RunStore, model: ScriptedModel, tools: [any Tool], policy: ToolPolicy = ToolPolicy(requireApproval: ["send"]),
        approver: (any ToolApprover)? = nil, now: @escaping @Sendable () -> Date = { fixedDate }
    ) throws -> RunDriver {
        RunDriver(store: store, model: model, tools: try ToolRegistry(tools, policy: policy, approver: approver), owner: "d", now: now)
    }

    @Test func aGatedCallWaitsDurablyAndRunsOnceAfterApproval() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let model = Self.script()
        let waiting = try await Self.driver(store, model: model, tools: [send]).run(goal: "Send it", configuration: .init(model: "m"))
        #expect(waiting.status == .waitingForApproval)
        #expect(send.count == 0)
        let pending = try #require(waiting.pendingApprovals.first)
        #expect(pending.key == Self.gatedKey && pending.request.call.arguments == #"{"text":"hi"}"#)
        #expect(pending.request.effect == .sideEffecting && pending.request.expiresAt == nil)

        // No process holds it, and no worker may claim it while it waits.
        let summary = try await store.requireRun(waiting.runID)
        #expect(summary.status == .waitingForApproval && summary.pendingApprovals == 1)
        let lease = try await store.lease(of: waiting.runID)
        #expect(lease == nil || lease!.expiresAt <= fixedDate)
        #expect(try await store.claimNextRun(owner: "w", until: fixedDate.addingTimeInterval(30), maxAttempts: 5, at: fixedDate) == nil)
        // Driving it again without a decision changes nothing.
        #expect(try await Self.driver(store, model: model, tools: [send]).drive(waiting.runID).status == .waitingForApproval)
        #expect(send.count == 0)

        let decided = try await store.decideApproval(
            waiting.runID, key: nil, decision: ApprovalDecision(verdict: .approve, decidedBy: "key_alice"), owner: "api",
            at: { fixedDate })
        #expect(decided.status == .running && decided.pendingApprovals.isEmpty)
        #expect(decided.approvals[Self.gatedKey]?.decision?.decidedBy == "key_alice")
        // Now it is the workers' again.
        let claimed = try #require(
            try await store.claimNextRun(owner: "w", until: fixedDate.addingTimeInterval(30), maxAttempts: 5, at: fixedDate))
        let final = try await Self.driver(store, model: model, tools: [send]).drive(claimed)
        #expect(final.status == .succeeded)
        #expect(send.count == 1)
        #expect(model.requests.last?.messages.last?.content == "echo: hi")

        // A second decision on the same call is refused, naming the first.
        await #expect(throws: TroupeError.self) {
            _ = try await store.decideApproval(
                waiting.runID, key: Self.gatedKey, decision: ApprovalDecision(verdict: .deny, decidedBy: "x"), owner: "api")
        }
    }

    @Test func aDenialIsTheCallsResultAndTheToolNeverRuns() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let model = Self.script()
        let waiting = try await Self.driver(store, model: model, tools: [send]).run(goal: "Send it", configuration: .init(model: "m"))
        _ = try await store.decideApproval(
            waiting.runID, key: Self.gatedKey, decision: ApprovalDecision(verdict: .deny, reason: "not on a Friday", decidedBy: "key_bob"),
            owner: "api")
        let final = try await Self.driver(store, model: model, tools: [send]).drive(waiting.runID)
        #expect(final.status == .succeeded)
        #expect(send.count == 0)
        let told = try #require(model.requests.last?.messages.last?.content)
        #expect(told.contains("A person denied this call of send") && told.contains("not on a Friday"))
        // The journal says who denied it.
        let events = try await store.events(of: waiting.runID).map(\.event)
        #expect(
            events.contains(
                .approvalDecided(key: Self.gatedKey, decision: .init(verdict: .deny, reason: "not on a Friday", decidedBy: "key_bob"))))
    }

    @Test func anEditedCallRunsWithTheEditedArgumentsAndTheModelIsTold() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let model = Self.script()
        let waiting = try await Self.driver(store, model: model, tools: [send]).run(goal: "Send it", configuration: .init(model: "m"))

        // Edits that are not a JSON object or break the schema are refused, and nothing is journaled.
        for bad in ["not json", "[1]", #"{"text": 5}"#, ""] {
            await #expect(throws: TroupeError.self) {
                _ = try await store.decideApproval(
                    waiting.runID, key: nil, decision: .init(verdict: .edit, arguments: bad, decidedBy: "k"), owner: "api")
            }
        }
        #expect(try await store.requireRun(waiting.runID).pendingApprovals == 1)

        _ = try await store.decideApproval(
            waiting.runID, key: nil, decision: .init(verdict: .edit, arguments: #"{ "text" : "bye" }"#, decidedBy: "key_carol"),
            owner: "api")
        let final = try await Self.driver(store, model: model, tools: [send]).drive(waiting.runID)
        #expect(final.status == .succeeded)
        #expect(send.count == 1)
        let told = try #require(model.requests.last?.messages.last?.content)
        #expect(told.hasSuffix("echo: bye"))
        #expect(told.contains("key_carol changed the arguments") && told.contains(#"{"text":"bye"}"#))
    }

    @Test(arguments: [ApprovalVerdict.approve, .deny])
    func aTimeoutAppliesItsDefault(_ verdict: ApprovalVerdict) async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let model = Self.script()
        let policy = ToolPolicy(
            requireApproval: ["send"], limits: ["send": ToolLimits(approvalTimeoutSeconds: 60, approvalTimeoutDecision: verdict)])
        let waiting = try await Self.driver(store, model: model, tools: [send], policy: policy)
            .run(goal: "Send it", configuration: .init(model: "m"))
        let request = try #require(waiting.pendingApprovals.first?.request)
        #expect(request.expiresAt == fixedDate.addingTimeInterval(60) && request.onTimeout == verdict)

        // Not yet: nothing is decided.
        #expect(try await store.applyApprovalTimeouts(owner: "w", at: { fixedDate.addingTimeInterval(59) }).isEmpty)
        #expect(try await store.applyApprovalTimeouts(owner: "w", at: { fixedDate.addingTimeInterval(61) }) == [waiting.runID])
        let final = try await Self.driver(store, model: model, tools: [send], policy: policy).drive(waiting.runID)
        #expect(final.status == .succeeded)
        #expect(final.approvals[Self.gatedKey]?.decision?.decidedBy == ApprovalDecision.timeoutDecider)
        #expect(send.count == (verdict == .approve ? 1 : 0))
        if verdict == .deny {
            #expect(model.requests.last?.messages.last?.content?.contains("No one approved this call of send") == true)
        }
    }

    @Test func aDriverAppliesAnExpiredTimeoutItself() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let model = Self.script()
        let policy = ToolPolicy(requireApproval: ["send"], limits: ["send": ToolLimits(approvalTimeoutSeconds: 60)])
        let waiting = try await Self.driver(store, model: model, tools: [send], policy: policy)
            .run(goal: "Send it", configuration: .init(model: "m"))
        // `troupe resume` an hour later: the default (deny) applies as the drive begins.
        let final = try await Self.driver(store, model: model, tools: [send], policy: policy, now: { fixedDate.addingTimeInterval(3_600) })
            .drive(waiting.runID)
        #expect(final.status == .succeeded)
        #expect(send.count == 0)
    }

    @Test func anInProcessApproverDecidesAndIsJournaledAsTheDecider() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let approver = Approver(answer: .approved)
        let final = try await Self.driver(store, model: Self.script(), tools: [send], approver: approver)
            .run(goal: "Send it", configuration: .init(model: "m"))
        #expect(final.status == .succeeded)
        #expect(send.count == 1)
        #expect(approver.seen.all == [#"send {"text":"hi"} s1"#])
        #expect(final.approvals[Self.gatedKey]?.decision?.decidedBy == "test-approver")

        // Its decisions are journaled as those through the API are: a denial's reason trimmed.
        let denying = Approver(answer: .denied(reason: "  not now \n"))
        let denied = try await Self.driver(InMemoryRunStore(), model: Self.script(), tools: [send], approver: denying)
            .run(goal: "Send it", configuration: .init(model: "m"))
        #expect(denied.approvals[Self.gatedKey]?.decision?.reason == "not now")

        // An approver that defers leaves the call waiting for the API or `troupe approve`.
        let deferring = Approver(answer: .deferred)
        let waiting = try await Self.driver(InMemoryRunStore(), model: Self.script(), tools: [send], approver: deferring)
            .run(goal: "Send it", configuration: .init(model: "m"))
        #expect(waiting.status == .waitingForApproval)
        #expect(deferring.seen.all.count == 1)
    }

    @Test func callsOfOneTurnWaitTogetherAndTheRestRunsMeanwhile() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let echo = CountingTool(name: "echo", effect: .readOnly)
        let model = Self.script([("send", #"{"text":"a"}"#), ("echo", #"{"text":"b"}"#), ("send", #"{"text":"c"}"#)])
        let waiting = try await Self.driver(store, model: model, tools: [send, echo]).run(goal: "Go", configuration: .init(model: "m"))
        #expect(waiting.status == .waitingForApproval)
        #expect(echo.count == 1, "the call that needs no approval ran")
        #expect(waiting.pendingApprovals.map(\.key.callIndex) == [1, 3])
        #expect(model.requests.count == 2, "the step waits for all its calls before the model's next turn")

        // Asking which call, when two wait, is an error that lists them.
        let ambiguous = await #expect(throws: TroupeError.self) {
            _ = try await store.decideApproval(waiting.runID, key: nil, decision: .init(verdict: .approve, decidedBy: "k"), owner: "api")
        }
        #expect(ambiguous?.message.contains("s1/1/1 (send), s1/1/3 (send)") == true)

        _ = try await store.decideApproval(
            waiting.runID, key: ActivityKey(step: "s1", attempt: 1, callIndex: 3), decision: .init(verdict: .approve, decidedBy: "k"),
            owner: "api")
        #expect(try await store.requireRun(waiting.runID).status == .waitingForApproval, "one call still waits")
        let partly = try await Self.driver(store, model: model, tools: [send, echo]).drive(waiting.runID)
        #expect(partly.status == .waitingForApproval)
        #expect(send.count == 1)
        _ = try await store.decideApproval(
            waiting.runID, key: ActivityKey(step: "s1", attempt: 1, callIndex: 1), decision: .init(verdict: .deny, decidedBy: "k"),
            owner: "api")
        let final = try await Self.driver(store, model: model, tools: [send, echo]).drive(waiting.runID)
        #expect(final.status == .succeeded)
        #expect(send.count == 1 && echo.count == 1)
        let messages = try #require(model.requests.last?.messages)
        let results = messages.filter { $0.role == .tool }.compactMap(\.content)
        #expect(results.count == 3 && results[0].contains("denied") && results[1] == "echo: b" && results[2] == "echo: c")
    }

    @Test func decisionsOnRunsThatCannotTakeThemAreRefused() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let waiting = try await Self.driver(store, model: Self.script(), tools: [send]).run(goal: "Go", configuration: .init(model: "m"))
        let approve = ApprovalDecision(verdict: .approve, decidedBy: "k")
        let unknown = await #expect(throws: TroupeError.self) {
            _ = try await store.decideApproval(
                waiting.runID, key: ActivityKey(step: "s9", attempt: 1, callIndex: 1), decision: approve, owner: "a")
        }
        #expect(unknown?.code == .notFound && unknown?.message.contains("waiting: s1/1/1 (send)") == true)
        let missing = await #expect(throws: TroupeError.self) {
            _ = try await store.decideApproval(RunID("run_nope"), key: nil, decision: approve, owner: "a")
        }
        #expect(missing?.code == .notFound)
        #expect(try await store.cancelRun(waiting.runID, reason: "no") == nil)
        let ended = await #expect(throws: TroupeError.self) {
            _ = try await store.decideApproval(waiting.runID, key: nil, decision: approve, owner: "a")
        }
        #expect(ended?.code == .invalidTransition)
        #expect(send.count == 0)
    }

    @Test func aReadOnlyRunIsOfferedAndMayCallOnlyReadOnlyTools() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let echo = CountingTool(name: "echo", effect: .readOnly)
        let model = ScriptedModel([
            .response(.plan(plan([("s1", [], [])]))),
            .response(.toolCall("send", #"{"text":"x"}"#)),
            .response(.text("done")),
        ])
        var configuration = RunConfiguration(model: "m")
        configuration.readOnly = true
        let final = try await Self.driver(store, model: model, tools: [send, echo], policy: ToolPolicy())
            .run(goal: "Look", configuration: configuration)
        #expect(final.status == .succeeded)
        #expect(send.count == 0)
        #expect(model.requests.allSatisfy { request in request.tools.allSatisfy { $0.name == "echo" } })
        #expect(model.requests[1].tools.map(\.name) == ["echo"])
        #expect(model.requests.last?.messages.last?.content?.contains("Unknown tool 'send'") == true)
    }

    @Test func approvalEventsRoundTripThroughTheJournalEncoding() throws {
        let events: [RunEvent] = [
            .approvalRequested(
                key: Self.gatedKey,
                request: ApprovalRequest(
                    call: ToolCall(id: "c", name: "send", arguments: "{}"), effect: .sideEffecting,
                    parameters: .object([.init("text", .string("What to echo."))]), expiresAt: fixedDate,
                    onTimeout: .approve)),
            .approvalDecided(key: Self.gatedKey, decision: ApprovalDecision(verdict: .edit, arguments: #"{"a":1}"#, decidedBy: "key_x")),
        ]
        for event in events {
            let data = try JSONCoding.encode(event)
            #expect(try JSONCoding.decode(RunEvent.self, from: data) == event, "\(String(decoding: data, as: UTF8.self))")
        }
    }

    /// A tool that takes longer than any test's step timeout.
    struct Slow: Tool {
        let name = "slow"
        let description = "Takes its time."
        let effect = ToolEffect.readOnly
        let parameters: JSONSchema = .object([])
        func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
            try await Task.sleep(for: .seconds(30))
            return ToolOutput("late")
        }
    }

    @Test func aCallWhoseStepEndedIsSettledSoTheRunNoLongerWaits() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let model = Self.script([("send", #"{"text":"a"}"#), ("slow", "{}")])
        let configuration = RunConfiguration(model: "m", maxReplans: 0, stepTimeoutSeconds: 0.2)
        let final = try await Self.driver(store, model: model, tools: [send, Slow()]).run(goal: "Go", configuration: configuration)
        #expect(final.status == .failed)
        let settled = try #require(final.approvals[Self.gatedKey]?.decision)
        #expect(settled.verdict == .deny && settled.decidedBy == ApprovalDecision.systemDecider)
        #expect(send.count == 0)
        let summary = try await store.requireRun(final.runID)
        #expect(summary.status == .failed && summary.pendingApprovals == 0)
    }

    /// It was decided under the rules it started with: it runs again as a read-only call does,
    /// without a request (a request for a started call could not be journaled).
    @Test func aCallStartedBeforeItsToolNeededApprovalIsNotAskedAbout() async throws {
        // A read-only call in flight when its driver died; on resume the tool needs approval.
        let (store, id) = try await crashedJournal(
            replies: [
                .response(.plan(plan([("s1", ["append_line"], [])]))), .response(.toolCall("append_line", #"{"text":"x"}"#)),
                .response(.text("done")),
            ],
            tool: CountingTool(name: "append_line", effect: .readOnly), goal: "Look")
        let tool = CountingTool(name: "append_line", effect: .readOnly)
        let model = ScriptedModel([.response(.text("done"))])
        let final = try await Self.driver(
            store, model: model, tools: [tool], policy: ToolPolicy(requireApproval: ["append_line"])
        ).drive(id)
        #expect(final.status == .succeeded)
        #expect(tool.count == 1 && final.approvals.isEmpty)
    }

    @Test func theExecutorRefusesAGatedCallThatWasNotApproved() async throws {
        let tool = CountingTool(name: "send", effect: .sideEffecting)
        let tools = try ToolRegistry([tool], policy: ToolPolicy(requireApproval: ["send"]))
        let context = ToolContext(runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: "/tmp", logger: .init(label: "t"))
        let call = ToolCall(id: "c", name: "send", arguments: #"{"text":"x"}"#)
        let refused = await ExecutorAgent().run(call, allowed: [], tools: tools, context: context)
        #expect(refused.isError && refused.content.contains("needs a person's approval") && tool.count == 0)
        let ran = await ExecutorAgent().run(call, allowed: [], tools: tools, context: context, approved: true)
        #expect(ran.content == "echo: x" && tool.count == 1)
    }

    /// An approver that takes its time: the clock moves on while it decides.
    final class Clock: Sendable {
        let time = Mutex(fixedDate)
        var now: Date { time.withLock { $0 } }
    }

    struct SlowApprover: ToolApprover {
        let identity = "slow-person"
        let clock: Clock
        func review(_ request: ApprovalRequest, context: ToolContext) async -> ToolApproval {
            clock.time.withLock { $0 += 600 }  // twice the step timeout
            return .approved
        }
    }

    @Test func theTimeAPersonTakesIsNotHeldAgainstTheStep() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let clock = Clock()
        let driver = try Self.driver(store, model: Self.script(), tools: [send], approver: SlowApprover(clock: clock), now: { clock.now })
        let final = try await driver.run(goal: "Send it", configuration: RunConfiguration(model: "m"))
        #expect(final.status == .succeeded, "\(String(describing: final.error))")
        #expect(send.count == 1)
    }

    @Test func theSameDecisionAgainIsARetryNotAConflict() async throws {
        let store = InMemoryRunStore()
        let send = CountingTool(name: "send", effect: .sideEffecting)
        let waiting = try await Self.driver(store, model: Self.script(), tools: [send]).run(goal: "Go", configuration: .init(model: "m"))
        let deny = ApprovalDecision(verdict: .deny, reason: " no ", decidedBy: "key_a")
        let first = try await store.decideApproval(waiting.runID, key: Self.gatedKey, decision: deny, owner: "api")
        let again = try await store.decideApproval(waiting.runID, key: Self.gatedKey, decision: deny, owner: "api")
        #expect(first.sequence == again.sequence, "nothing more was journaled")
        await #expect(throws: TroupeError.self) {
            _ = try await store.decideApproval(
                waiting.runID, key: Self.gatedKey, decision: ApprovalDecision(verdict: .approve, decidedBy: "key_a"), owner: "api")
        }
    }
}
