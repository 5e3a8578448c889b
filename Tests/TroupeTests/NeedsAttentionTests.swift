import Foundation
import Testing
import Troupe
import TroupeTesting

/// A side-effecting tool call that was in flight when its driver died is never run again by itself.
@Suite struct NeedsAttentionTests {
    /// A journal cut right after `activityStarted` of a side-effecting tool call: what a crash leaves.
    static func crashedJournal(effect: ToolEffect) async throws -> (store: InMemoryRunStore, id: RunID) {
        try await TroupeTests.crashedJournal(
            replies: [
                .response(.plan(plan([("s1", ["append_line"], [])]))),
                .response(.toolCall("append_line", #"{"text":"once"}"#)),
                .response(.text("appended")),
            ],
            tool: CountingTool(name: "append_line", effect: effect), goal: "Append a line")
    }

    @Test func inFlightSideEffectingToolParksRunInsteadOfRepeating() async throws {
        let (store, id) = try await Self.crashedJournal(effect: .sideEffecting)
        let tool = CountingTool(name: "append_line", effect: .sideEffecting)
        let model = ScriptedModel([.response(.text("appended"))])
        let driver = try makeDriver(store: store, model: model, tools: [tool], owner: "second-driver")
        let parked = try await driver.drive(id)
        #expect(parked.status == .needsAttention)
        #expect(parked.attentionKey == ActivityKey(step: "s1", attempt: 1, callIndex: 1))
        #expect(tool.count == 0)
        #expect(model.requests.isEmpty)
        #expect(try await store.requireRun(id).status == .needsAttention)

        // Driving again without a decision changes nothing.
        let still = try await driver.drive(id)
        #expect(still.status == .needsAttention)
        #expect(tool.count == 0)

        // The operator says: do not repeat it. The model is told the outcome is unknown.
        let skipped = try await driver.drive(id, resolution: .skip)
        #expect(skipped.status == .succeeded)
        #expect(tool.count == 0)
        let toolMessage = try #require(model.requests.last?.messages.last)
        #expect(toolMessage.role == .tool)
        #expect(toolMessage.content?.contains("skipped") == true)
    }

    @Test func operatorRetryRunsTheCallOnce() async throws {
        let (store, id) = try await Self.crashedJournal(effect: .sideEffecting)
        let tool = CountingTool(name: "append_line", effect: .sideEffecting)
        let driver = try makeDriver(store: store, model: ScriptedModel([.response(.text("appended"))]), tools: [tool])
        #expect(try await driver.drive(id).status == .needsAttention)
        let retried = try await driver.drive(id, resolution: .retry)
        #expect(retried.status == .succeeded)
        #expect(tool.count == 1)
    }

    @Test(arguments: [ToolEffect.readOnly, .idempotent])
    func inFlightSafeToolIsRunAgain(effect: ToolEffect) async throws {
        let (store, id) = try await Self.crashedJournal(effect: effect)
        let tool = CountingTool(name: "append_line", effect: effect)
        let driver = try makeDriver(store: store, model: ScriptedModel([.response(.text("appended"))]), tools: [tool])
        let final = try await driver.drive(id)
        #expect(final.status == .succeeded)
        #expect(tool.count == 1)
    }

    @Test func resumeLongAfterACrashDoesNotCountTheDowntimeAgainstTheStep() async throws {
        let (store, id) = try await Self.crashedJournal(effect: .readOnly)
        let tool = CountingTool(name: "append_line", effect: .readOnly)
        var driver = try makeDriver(store: store, model: ScriptedModel([.response(.text("appended"))]), tools: [tool])
        driver.now = { fixedDate.addingTimeInterval(3_600) }  // an hour later; the step timeout is 300 s
        let final = try await driver.drive(id)
        #expect(final.status == .succeeded)
        #expect(tool.count == 1)
    }

    @Test func aResolutionIsNotAppliedToACallNobodyWasShown() async throws {
        let (store, id) = try await Self.crashedJournal(effect: .sideEffecting)
        let tool = CountingTool(name: "append_line", effect: .sideEffecting)
        let driver = try makeDriver(store: store, model: ScriptedModel([.response(.text("appended"))]), tools: [tool])
        // The run was not parked yet: `--skip` given up front cannot mean this call, which no one has seen.
        let parked = try await driver.drive(id, resolution: .skip)
        #expect(parked.status == .needsAttention)
        #expect(tool.count == 0)
        let types = try await store.events(of: id).map(\.event.type)
        #expect(types.contains("runNeedsAttention") && !types.contains("attentionResolved"))
    }

    @Test func changedConfigurationOnResumeIsJournaledAndFolded() async throws {
        let (store, id) = try await Self.crashedJournal(effect: .readOnly)
        let tool = CountingTool(name: "append_line", effect: .readOnly)
        let driver = try makeDriver(store: store, model: ScriptedModel([.response(.text("appended"))]), tools: [tool])
        var changed = try await store.requireRun(id).configuration
        changed.maxIterations = 3
        let final = try await driver.drive(id, configuration: changed)
        #expect(final.status == .succeeded)
        #expect(final.configuration.maxIterations == 3)
        let events = try await store.events(of: id)
        #expect(events.contains { if case .configurationUpdated(let c) = $0.event { c.maxIterations == 3 } else { false } })
        #expect(try RunStateMachine(runID: id, replaying: events).configuration.maxIterations == 3)
        #expect(try await store.requireRun(id).configuration.maxIterations == 3)
    }
}
