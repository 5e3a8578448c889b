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

    @Test(arguments: ["", "   \n ", String(repeating: "x", count: RunDriver.maxGoalBytes + 1)])
    func unusableGoalsAreRefusedBeforeAnythingIsStored(goal: String) async throws {
        let store: any RunStore = InMemoryRunStore()
        let driver = try makeDriver(store: store, model: ScriptedModel(), tools: [])
        let error = await #expect(throws: TroupeError.self) {
            _ = try await driver.run(goal: goal, configuration: RunConfiguration(model: "m"))
        }
        #expect(error?.code == .invalidInput)
        #expect(try await store.runs(RunQuery()).isEmpty)
    }

    @Test func invalidLimitsAreRefusedWithTheFieldNamed() async throws {
        let driver = try makeDriver(store: InMemoryRunStore(), model: ScriptedModel(), tools: [])
        let error = await #expect(throws: TroupeError.self) {
            _ = try await driver.run(goal: "x", configuration: RunConfiguration(model: "m", maxSteps: 0))
        }
        #expect(error?.code == .configuration)
        #expect(error?.message.contains("max steps") == true)
    }
}
