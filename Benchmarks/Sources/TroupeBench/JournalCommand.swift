import ArgumentParser
import Foundation
import Troupe

struct JournalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "SQLite append latency of model-call events, and the time to load and fold a long journal."
    )

    @Option(help: "Events in the journal to fold (about).")
    var events = 1_000

    @Option(help: "Times the fold is measured.")
    var repetitions = 20

    func run() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("troupe-bench-journal-\(UUID().uuidString).db").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let id = RunID.make()
        let clock = ContinuousClock()
        var appendLatencies: [Duration] = []
        try await SQLiteRunStore.withStore(path: path) { store in
            let configuration = RunConfiguration(model: "bench", tools: [])
            var sequence = try await store.createRun(id: id, goal: "journal", configuration: configuration, at: Date()).lastSequence
            let steps = max(1, (events - 3) / 8)
            let plan = Plan(
                steps: (1...steps).map { PlanStep(id: "s\($0)", title: "Step \($0)", instruction: "Echo \($0).", tools: ["echo"]) })
            let planKey = ActivityKey(step: "plan", attempt: 0, callIndex: 0)
            sequence = try await store.append(
                [
                    .leaseAcquired(owner: "bench"), .activityStarted(key: planKey, kind: .model(purpose: .plan)),
                    .activityCompleted(key: planKey, result: .model(ChatResponse(message: .assistant("{}"), finishReason: .stop))),
                    .planProposed(round: 0, plan: plan),
                ],
                to: id,
                expectedSequence: sequence,
                at: Date()
            )
            for step in plan.steps {
                let turn = ActivityKey(step: step.id, attempt: 1, callIndex: 0)
                let tool = ActivityKey(step: step.id, attempt: 1, callIndex: 1)
                let answer = ActivityKey(step: step.id, attempt: 1, callIndex: 2)
                let call = ToolCall(id: "call_\(step.id)", name: "echo", arguments: #"{"text":"hello"}"#)
                let usage = Usage(inputTokens: 300, outputTokens: 20)
                let batches: [[RunEvent]] = [
                    [.stepStarted(stepID: step.id, attempt: 1), .activityStarted(key: turn, kind: .model(purpose: .execute))],
                    [
                        .activityCompleted(
                            key: turn,
                            result: .model(
                                ChatResponse(message: .assistant(nil, toolCalls: [call]), finishReason: .toolCalls, usage: usage))
                        ),
                        .activityStarted(key: tool, kind: .tool(name: "echo", callID: call.id, effect: .readOnly)),
                    ],
                    [
                        .activityCompleted(key: tool, result: .tool(ToolOutput("hello"))),
                        .activityStarted(key: answer, kind: .model(purpose: .execute)),
                    ],
                    [
                        .activityCompleted(
                            key: answer,
                            result: .model(ChatResponse(message: .assistant("Done: hello"), finishReason: .stop, usage: usage))
                        ),
                        .stepCompleted(stepID: step.id, output: "Done: hello"),
                    ],
                ]
                for batch in batches {
                    let start = clock.now
                    sequence = try await store.append(batch, to: id, expectedSequence: sequence, at: Date())
                    appendLatencies.append(clock.now - start)
                }
            }
        }
        var folds: [Duration] = []
        var folded = 0
        for _ in 0..<repetitions {
            try await SQLiteRunStore.withStore(path: path) { store in
                let start = clock.now
                let machine = try RunStateMachine(runID: id, replaying: try await store.events(of: id))
                folds.append(clock.now - start)
                folded = machine.sequence
            }
        }
        print(
            "{\"mode\": \"journal\", \"events\": \(folded), \"append_p50_ms\": \(Measurement.format(Measurement.percentile(appendLatencies, 0.5) * 1000)), "
                + "\"append_p99_ms\": \(Measurement.format(Measurement.percentile(appendLatencies, 0.99) * 1000)), "
                + "\"fold_p50_ms\": \(Measurement.format(Measurement.percentile(folds, 0.5) * 1000))}"
        )
    }
}
