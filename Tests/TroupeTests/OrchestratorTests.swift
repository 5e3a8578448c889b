import Foundation
import Synchronization
import Testing
import Troupe
import TroupeTesting

/// The state machine alone: events in, actions out.
@Suite struct RunStateMachineTests {
    func machine(_ events: [RunEvent], configuration: RunConfiguration = RunConfiguration(model: "m")) throws -> RunStateMachine {
        var machine = RunStateMachine(runID: RunID("run_test"))
        try machine.apply(.runCreated(goal: "g", configuration: configuration), at: fixedDate)
        for event in events { try machine.apply(event, at: fixedDate) }
        return machine
    }

    let diamond = plan([("a", [], []), ("b", [], []), ("c", [], ["a", "b"])])

    @Test func firstActionIsThePlannerCall() throws {
        let actions = try machine([.leaseAcquired(owner: "x")]).nextActions()
        #expect(actions == [.callModel(key: ActivityKey(step: "plan", attempt: 0, callIndex: 0), purpose: .plan, stepID: nil)])
    }

    @Test func readyStepsStartTogetherAndDependentsWait() throws {
        let actions = try machine([.leaseAcquired(owner: "x"), .planProposed(round: 0, plan: diamond)]).nextActions()
        #expect(actions == [.record(.stepStarted(stepID: "a", attempt: 1)), .record(.stepStarted(stepID: "b", attempt: 1))])
    }

    @Test func concurrencyLimitIsRespected() throws {
        var configuration = RunConfiguration(model: "m")
        configuration.maxConcurrentSteps = 1
        let actions = try machine([.leaseAcquired(owner: "x"), .planProposed(round: 0, plan: diamond)], configuration: configuration)
            .nextActions()
        #expect(actions == [.record(.stepStarted(stepID: "a", attempt: 1))])
    }

    @Test func dependentStartsOnlyAfterAllDependenciesSucceed() throws {
        var events: [RunEvent] = [
            .leaseAcquired(owner: "x"), .planProposed(round: 0, plan: diamond),
            .stepStarted(stepID: "a", attempt: 1), .stepStarted(stepID: "b", attempt: 1), .stepCompleted(stepID: "a", output: "A"),
        ]
        #expect(!(try machine(events).nextActions().contains(.record(.stepStarted(stepID: "c", attempt: 1)))))
        events.append(.stepCompleted(stepID: "b", output: "B"))
        #expect(try machine(events).nextActions() == [.record(.stepStarted(stepID: "c", attempt: 1))])
        events += [.stepStarted(stepID: "c", attempt: 1), .stepCompleted(stepID: "c", output: "C")]
        #expect(try machine(events).nextActions() == [.record(.runSucceeded(answer: "C"))])
    }

    @Test func toolCallsFollowTheModelTurnWithDeterministicKeys() throws {
        let turn = ActivityKey(step: "a", attempt: 1, callIndex: 0)
        let response = ChatResponse.toolCalls([("echo", #"{"text":"1"}"#), ("echo", #"{"text":"2"}"#)])
        let state = try machine([
            .leaseAcquired(owner: "x"), .planProposed(round: 0, plan: plan([("a", [], [])])), .stepStarted(stepID: "a", attempt: 1),
            .activityStarted(key: turn, kind: .model(purpose: .execute)), .activityCompleted(key: turn, result: .model(response)),
        ])
        let calls = response.message.toolCalls
        #expect(
            state.nextActions() == [
                .callTool(key: ActivityKey(step: "a", attempt: 1, callIndex: 1), stepID: "a", call: calls[0]),
                .callTool(key: ActivityKey(step: "a", attempt: 1, callIndex: 2), stepID: "a", call: calls[1]),
            ]
        )
    }

    @Test func aModelCallUnderWayIsNotProposedTwice() throws {
        let turn = ActivityKey(step: "a", attempt: 1, callIndex: 0)
        let state = try machine([
            .leaseAcquired(owner: "x"), .planProposed(round: 0, plan: plan([("a", [], [])])), .stepStarted(stepID: "a", attempt: 1),
            .activityStarted(key: turn, kind: .model(purpose: .execute)),
        ])
        #expect(state.nextActions() == [.callModel(key: turn, purpose: .execute, stepID: "a")])
    }

    @Test func cancellationIsTerminal() throws {
        let state = try machine([.leaseAcquired(owner: "x"), .runCancelled(reason: "stop")])
        #expect(state.status == .cancelled)
        #expect(state.nextActions().isEmpty)
    }

    @Test func inconsistentJournalsAreRejected() throws {
        var empty = RunStateMachine(runID: RunID("run_x"))
        #expect(throws: TroupeError.self) { try empty.apply(.leaseAcquired(owner: "x"), at: fixedDate) }
        let key = ActivityKey(step: "plan", attempt: 0, callIndex: 0)
        #expect(throws: TroupeError.self) { try machine([.activityCompleted(key: key, result: .tool(ToolOutput("x")))]) }
        #expect(throws: TroupeError.self) { try machine([.runSucceeded(answer: "x"), .stepStarted(stepID: "a", attempt: 1)]) }
        #expect(throws: TroupeError.self) { try machine([.stepStarted(stepID: "nope", attempt: 1)]) }
    }
}

/// The driver with a real clock swapped for a test clock, and concurrent steps.
@Suite struct RunDriverBehaviourTests {
    /// A model that calls the step's first tool once, then answers.
    static func toolThenAnswer(plan: Plan) -> ScriptedModel {
        ScriptedModel(
            [.response(.plan(plan))]
                + Array(
                    repeating: .handler { request in
                        if request.messages.last?.role == .tool { return .text("done: \(request.messages.last?.content ?? "")") }
                        guard let tool = request.tools.first else { return .text("no tools") }
                        return .toolCall(tool.name, #"{"text":"x"}"#)
                    },
                    count: plan.steps.count * 2
                )
        )
    }

    /// A tool that waits until `parties` calls are inside it at once: it only returns if steps run concurrently.
    final class Rendezvous: Tool, Sendable {
        let name = "meet"
        let description = "Waits for the other step."
        let effect = ToolEffect.readOnly
        let parameters: JSONSchema = .object([.init("text", .string())])
        let parties: Int
        private let state = Mutex<(arrived: Int, waiting: [CheckedContinuation<Void, Never>])>((0, []))

        init(parties: Int) { self.parties = parties }

        func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
            await withCheckedContinuation { continuation in
                let release = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                    state.arrived += 1
                    state.waiting.append(continuation)
                    guard state.arrived >= parties else { return [] }
                    defer { state.waiting = [] }
                    return state.waiting
                }
                for waiter in release { waiter.resume() }
            }
            return ToolOutput("met")
        }
    }

    @Test func independentStepsRunConcurrently() async throws {
        let model = Self.toolThenAnswer(plan: plan([("a", ["meet"], []), ("b", ["meet"], []), ("c", [], ["a", "b"])]))
        let store = InMemoryRunStore()
        let final = try await makeDriver(store: store, model: model, tools: [Rendezvous(parties: 2)])
            .run(goal: "x", configuration: RunConfiguration(model: "m"))
        #expect(final.status == .succeeded, "\(String(describing: final.error))")
        // c started only after both a and b completed.
        let events = try await store.events(of: final.runID)
        func sequence(_ match: (RunEvent) -> Bool) -> Int { events.first { match($0.event) }?.sequence ?? -1 }
        let cStarted = sequence { if case .stepStarted("c", _) = $0 { true } else { false } }
        let aDone = sequence { if case .stepCompleted("a", _) = $0 { true } else { false } }
        let bDone = sequence { if case .stepCompleted("b", _) = $0 { true } else { false } }
        #expect(cStarted > aDone && cStarted > bDone)
    }

    /// A tool that never finishes by itself (until cancelled), and says when it started.
    final class Hang: Tool, Sendable {
        let name = "hang"
        let description = "Never returns."
        let effect = ToolEffect.readOnly
        let parameters: JSONSchema = .object([.init("text", .string())])
        let started: AsyncStream<Void>.Continuation
        init(started: AsyncStream<Void>.Continuation) { self.started = started }
        func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
            started.yield()
            try await Task.sleep(for: .seconds(3_600))
            return ToolOutput("impossible")
        }
    }

    /// A run whose only step calls a tool that never returns, on a test clock; returns once the tool
    /// is running and the driver's heartbeat and the step's deadline are waiting on the clock.
    struct HangingRun {
        var store: any RunStore = InMemoryRunStore()
        var clock = TestClock()
        var id = RunID.make()
        var task: Task<RunStateMachine, any Error>

        init(configuration: RunConfiguration = RunConfiguration(model: "m")) async throws {
            let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
            var driver = try makeDriver(
                store: store,
                model: RunDriverBehaviourTests.toolThenAnswer(plan: plan([("a", ["hang"], [])])),
                tools: [Hang(started: startedContinuation)]
            )
            driver.clock = clock
            task = Task { [driver, id] in try await driver.run(goal: "x", configuration: configuration, id: id) }
            for await _ in started { break }
            await clock.waitForSleepers(2)
        }
    }

    @Test func stepTimeoutFailsTheStepWithoutWaiting() async throws {
        var configuration = RunConfiguration(model: "m", maxReplans: 0)
        configuration.stepTimeoutSeconds = 5
        let run = try await HangingRun(configuration: configuration)
        run.clock.advance(by: .seconds(6))
        let final = try await run.task.value
        #expect(final.status == .failed)
        #expect(final.steps.first?.error?.code == .stepTimeout)
        #expect(final.error?.message.contains("time limit of 5 s") == true)
    }

    @Test func cancellationByAnotherWriterStopsTheDriverAtItsNextHeartbeat() async throws {
        let run = try await HangingRun()
        let (store, id) = (run.store, run.id)
        let tail = try await store.requireRun(id).lastSequence
        _ = try await store.append([.runCancelled(reason: "operator said stop")], to: id, expectedSequence: tail, at: fixedDate)
        run.clock.advance(by: .seconds(10))
        let final = try await run.task.value
        #expect(final.status == .cancelled)
        #expect(final.error?.message == "operator said stop")
        #expect(try await store.requireRun(id).status == .cancelled)
        #expect(try await store.lease(of: id) == nil)
    }

    @Test func driverWhoseLeaseIsTakenOverStopsWithoutWritingMore() async throws {
        let run = try await HangingRun()
        let (store, id) = (run.store, run.id)
        let held = try #require(try await store.lease(of: id))
        _ = try await store.acquireLease(on: id, owner: "intruder", until: fixedDate.addingTimeInterval(60), replacing: held, at: fixedDate)
        let tail = try await store.requireRun(id).lastSequence
        _ = try await store.append([.leaseAcquired(owner: "intruder")], to: id, expectedSequence: tail, at: fixedDate)
        run.clock.advance(by: .seconds(10))
        let error = await #expect(throws: TroupeError.self) { _ = try await run.task.value }
        #expect(error?.code == .leaseHeld)
        #expect(try await store.requireRun(id).lastSequence == tail + 1)
        #expect(try await store.lease(of: id)?.owner == "intruder")
    }
}
