import Foundation
import Testing
import Troupe
import TroupeTesting

@Suite struct RunDriverTests {
    @Test func scriptedRunCompletesAndJournalFoldsToSameState() async throws {
        let echo = CountingTool()
        let model = ScriptedModel([
            .response(.plan(plan([("s1", ["echo"], []), ("s2", ["echo"], ["s1"])]))),
            .response(.toolCall("echo", #"{"text":"one"}"#)),
            .response(.text("first done")),
            .response(.toolCall("echo", #"{"text":"two"}"#)),
            .response(.text("second done")),
        ])
        let store = InMemoryRunStore()
        let driver = try makeDriver(store: store, model: model, tools: [echo])
        let final = try await driver.run(goal: "Echo twice", configuration: RunConfiguration(model: "scripted"))
        #expect(final.status == .succeeded)
        #expect(final.answer == "second done")
        #expect(echo.count == 2)
        #expect(model.remaining == 0)

        let events = try await store.events(of: final.runID)
        let folded = try RunStateMachine(runID: final.runID, replaying: events)
        #expect(folded.status == .succeeded)
        #expect(folded.answer == final.answer)
        #expect(folded.steps == final.steps)
        #expect(folded.usage == final.usage)
        #expect(folded.nextActions().isEmpty)
        let summary = try await store.requireRun(final.runID)
        #expect(summary.status == .succeeded)
        #expect(summary.usage == Usage(inputTokens: 50, outputTokens: 25))
    }
}
