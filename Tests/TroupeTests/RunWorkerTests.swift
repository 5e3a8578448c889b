import Foundation
import Logging
import Synchronization
import Testing
import Troupe
import TroupeTesting

/// A model that plays any run of `steps` sequential steps, each calling `echo` once, whatever
/// other runs it serves at the same time; it can hold executor calls until they are let go.
final class PlayingModel: ChatModel {
    private struct State {
        var calls = 0
        var running = 0
        var mostRunning = 0
        var held: [CheckedContinuation<Void, Never>] = []
        var holding = false
    }

    private let state = Mutex(State())
    let steps: Int
    let pause: Duration

    init(steps: Int = 1, pause: Duration = .zero, holding: Bool = false) {
        self.steps = steps
        self.pause = pause
        state.withLock { $0.holding = holding }
    }

    /// Model calls answered or under way.
    var calls: Int { state.withLock { $0.calls } }
    /// The most calls under way at once.
    var mostRunning: Int { state.withLock { $0.mostRunning } }
    /// Executor calls waiting to be let go.
    var heldCalls: Int { state.withLock { $0.held.count } }

    /// Lets the held calls go, and every later one.
    func release() {
        let held = state.withLock { state in
            state.holding = false
            defer { state.held = [] }
            return state.held
        }
        for call in held { call.resume() }
    }

    func complete(_ request: ChatRequest) async throws -> ChatResponse {
        state.withLock { state in
            state.calls += 1
            state.running += 1
            state.mostRunning = max(state.mostRunning, state.running)
        }
        defer { state.withLock { $0.running -= 1 } }
        if pause > .zero { try await Task.sleep(for: pause) }
        if case .jsonSchema(let name, _, _) = request.responseFormat, name == "troupe_plan" {
            let ids = (1...steps).map { "s\($0)" }
            return .plan(plan(ids.enumerated().map { index, id in (id, ["echo"], index == 0 ? [] : [ids[index - 1]]) }))
        }
        // Held like a model that does not answer; cancelling the call lets it go, as with HTTP.
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state in
                    guard state.holding, !Task.isCancelled else { return true }
                    state.held.append(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            release()
        }
        try Task.checkCancellation()
        if request.messages.last?.role == .tool { return .text("done") }
        return .toolCall("echo", #"{"text":"hello"}"#)
    }
}

/// Polls `condition` (every 10 ms, at most 20 s): for states other tasks reach, never to time them.
func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
    for _ in 0..<2000 {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("gave up waiting until \(what)")
    throw CancellationError()
}

/// Workers log every drive at `info`; the tests read outcomes, not logs.
let quietLogger: Logger = {
    var logger = Logger(label: "troupe.test")
    logger.logLevel = .critical
    return logger
}()

@Suite struct RunWorkerTests {
    private func worker(
        _ store: any RunStore, _ model: PlayingModel, tool: CountingTool = CountingTool(), owner: String = "worker-a",
        concurrency: Int = 2, drainTimeout: Duration = .seconds(30), now: @escaping @Sendable () -> Date = { Date() },
        equip: (@Sendable (RunSummary) async throws -> RunEquipment)? = nil
    ) throws -> RunWorker {
        let tools = try ToolRegistry([tool])
        // No poll: every wake-up in these tests comes from an announcement or a finished drive.
        return RunWorker(
            store: store, owner: owner, concurrency: concurrency, pollInterval: .seconds(3600), drainTimeout: drainTimeout,
            now: now, logger: quietLogger, equip: equip ?? { _ in RunEquipment(model: model, tools: tools) })
    }

    private func create(_ count: Int, in store: any RunStore) async throws -> [RunID] {
        var ids: [RunID] = []
        for index in 0..<count {
            let id = RunID("run-\(index)")
            _ = try await store.createRun(id: id, goal: "Echo \(index)", configuration: RunConfiguration(model: "m"), at: Date())
            ids.append(id)
        }
        return ids
    }

    private func statuses(_ ids: [RunID], in store: any RunStore) async throws -> [RunStatus] {
        var statuses: [RunStatus] = []
        for id in ids { statuses.append(try await store.requireRun(id).status) }
        return statuses
    }

    @Test func drivesEveryWaitingRunAtMostConcurrencyAtOnce() async throws {
        let store = InMemoryRunStore()
        let model = PlayingModel(steps: 2, pause: .milliseconds(5))
        let tool = CountingTool()
        let ids = try await create(6, in: store)
        let drain = DrainSignal()
        let worker = try worker(store, model, tool: tool, concurrency: 2)
        let running = Task { await worker.run(until: drain) }
        try await eventually("every run succeeded") { try await statuses(ids, in: store).allSatisfy { $0 == .succeeded } }
        drain.begin()
        let tally = await running.value
        #expect(tally.claimed == 6)
        #expect(tally.finished == 6)
        #expect(model.mostRunning <= 2)
        // A plan, then a tool call and an answer per step: nothing was asked twice.
        #expect(model.calls == 6 * 5)
        #expect(tool.count == 6 * 2)
        for id in ids { #expect(try await store.lease(of: id) == nil) }
    }

    @Test func anAnnouncedRunWakesAnIdleWorker() async throws {
        let store = InMemoryRunStore()
        let model = PlayingModel()
        let drain = DrainSignal()
        let worker = try worker(store, model)
        let running = Task { await worker.run(until: drain) }
        // The worker found nothing and waits; only the new run's announcement can wake it.
        try await Task.sleep(for: .milliseconds(50))
        let ids = try await create(1, in: store)
        try await eventually("the run succeeded") { try await statuses(ids, in: store) == [.succeeded] }
        drain.begin()
        #expect(await running.value.finished == 1)
    }

    @Test func aDrainLetsTheCallInFlightFinishThenHandsTheRunBackForAnotherWorker() async throws {
        let store = InMemoryRunStore()
        let model = PlayingModel(steps: 2, holding: true)
        let tool = CountingTool()
        let ids = try await create(1, in: store)
        let drain = DrainSignal()
        let first = try worker(store, model, tool: tool)
        let running = Task { await first.run(until: drain) }
        try await eventually("the executor's first call is in flight") { model.heldCalls == 1 }
        drain.begin()
        model.release()
        let tally = await running.value
        #expect(tally.handedBack == 1)
        #expect(try await store.lease(of: ids[0]) == nil)
        let handedBack = try await store.requireRun(ids[0])
        #expect(handedBack.status == .running)
        // The call in flight was journaled; nothing was started after the drain began.
        let machine = try RunStateMachine(runID: ids[0], replaying: try await store.events(of: ids[0]))
        #expect(machine.activities.values.allSatisfy { $0.status != .started })
        let callsBefore = model.calls

        // Released clean: another worker claims it at once, and nothing finished is asked again.
        let second = try worker(store, model, tool: tool, owner: "worker-b")
        let again = DrainSignal()
        let secondRun = Task { await second.run(until: again) }
        try await eventually("the run succeeded") { try await statuses(ids, in: store) == [.succeeded] }
        again.begin()
        #expect(await secondRun.value.finished == 1)
        #expect(model.calls == 5)
        #expect(callsBefore == 2)
        #expect(tool.count == 2)
    }

    @Test func aDrainTimeoutCancelsTheDriveAndReleasesTheLease() async throws {
        let store = InMemoryRunStore()
        let model = PlayingModel(holding: true)
        let ids = try await create(1, in: store)
        let drain = DrainSignal()
        let worker = try worker(store, model, drainTimeout: .milliseconds(100))
        let running = Task { await worker.run(until: drain) }
        try await eventually("the executor's call is in flight") { model.heldCalls == 1 }
        drain.begin()
        let tally = await running.value
        model.release()
        #expect(tally.cancelled == 1)
        #expect(try await store.lease(of: ids[0]) == nil)
        // The cancellation is not journaled as the call's failure: the call is simply unfinished.
        let events = try await store.events(of: ids[0]).map(\.event)
        #expect(!events.contains { if case .activityFailed = $0 { true } else { false } })
        // Another worker finishes the run.
        let next = try self.worker(store, model, owner: "worker-b")
        let again = DrainSignal()
        let finishing = Task { await next.run(until: again) }
        try await eventually("the run succeeded") { try await statuses(ids, in: store) == [.succeeded] }
        again.begin()
        #expect(await finishing.value.finished == 1)
    }

    @Test func aWorkerThatLostItsLeaseWritesNothingMoreAndGoesOn() async throws {
        let store = InMemoryRunStore()
        let model = PlayingModel(holding: true)
        let tool = CountingTool()
        let ids = try await create(1, in: store)
        let drain = DrainSignal()
        let worker = try worker(store, model, tool: tool)
        let running = Task { await worker.run(until: drain) }
        try await eventually("the executor's call is in flight") { model.heldCalls == 1 }
        // The worker is frozen past its lease: another one takes the run over.
        let later = Date().addingTimeInterval(3600)
        let takeover = try #require(
            try await store.claimNextRun(owner: "worker-b", until: later.addingTimeInterval(30), maxAttempts: 5, at: later))
        let before = try await store.requireRun(ids[0]).lastSequence
        model.release()
        drain.begin()
        let tally = await running.value
        #expect(tally.lostLeases == 1)
        #expect(try await store.requireRun(ids[0]).lastSequence == before)
        #expect(tool.count == 0)
        #expect(try await store.lease(of: ids[0]) == takeover.lease)
    }

    @Test func theLeaseIsKeptWhileARunIsBeingEquipped() async throws {
        let store = InMemoryRunStore()
        let ids = try await create(1, in: store)
        let model = PlayingModel()
        let tools = try ToolRegistry([CountingTool()])
        let equipping = Mutex(false)
        let worker = RunWorker(
            store: store, owner: "worker-a", leaseDuration: .milliseconds(300), pollInterval: .seconds(3600), logger: quietLogger,
            equip: { _ in
                equipping.withLock { $0 = true }
                // Slower than three leases (an MCP server that takes its time to start).
                try await Task.sleep(for: .seconds(1))
                return RunEquipment(model: model, tools: tools)
            })
        let drain = DrainSignal()
        let running = Task { await worker.run(until: drain) }
        try await eventually("the run is being equipped") { equipping.withLock { $0 } }
        // The lease's expiry moves on while the equipping goes on (renewed every third of it).
        var expiries: Set<Date> = []
        while try await store.requireRun(ids[0]).status == .pending {
            if let lease = try await store.lease(of: ids[0]) { expiries.insert(lease.expiresAt) }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(expiries.count >= 2, "the lease was not renewed while equipping: \(expiries)")
        try await eventually("the run succeeded") { try await statuses(ids, in: store) == [.succeeded] }
        drain.begin()
        #expect(await running.value.finished == 1)
    }

    @Test func aRunThatCannotBeEquippedIsReleasedWithABackOff() async throws {
        let store = InMemoryRunStore()
        let ids = try await create(1, in: store)
        let drain = DrainSignal()
        let attempts = Mutex(0)
        let worker = try worker(
            store, PlayingModel(),
            equip: { _ in
                attempts.withLock { $0 += 1 }
                throw TroupeError(.configuration, "Tool group 'mcp:gone' names no server.")
            })
        let running = Task { await worker.run(until: drain) }
        try await eventually("the lease was released") {
            let lease = try await store.lease(of: ids[0])
            return attempts.withLock { $0 } == 1 && lease == nil
        }
        #expect(try await store.claimNextRun(owner: "x", until: Date(), maxAttempts: 5, at: Date()) == nil)
        drain.begin()
        #expect(await running.value.failed == 1)
        let later = Date().addingTimeInterval(60)
        #expect(try await store.claimNextRun(owner: "x", until: later, maxAttempts: 5, at: later)?.attempt == 2)
    }
}
