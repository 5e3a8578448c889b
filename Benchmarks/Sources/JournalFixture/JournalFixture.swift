import Foundation
import Troupe

/// The journal of a long, successful run, as the driver writes it: a plan of `steps` steps, then
/// for each step four appends (start; tool call asked; tool result; answer and completion).
public enum JournalFixture {
    /// The appends after `createRun`, in order: about `8 × steps + 4` events in all.
    public static func batches(steps: Int) -> [[RunEvent]] {
        let plan = Plan(
            steps: (1...max(1, steps)).map { PlanStep(id: "s\($0)", title: "Step \($0)", instruction: "Echo \($0).", tools: ["echo"]) })
        let planKey = ActivityKey(step: "plan", attempt: 0, callIndex: 0)
        var batches: [[RunEvent]] = [
            [
                .leaseAcquired(owner: "bench"), .activityStarted(key: planKey, kind: .model(purpose: .plan)),
                .activityCompleted(key: planKey, result: .model(ChatResponse(message: .assistant("{}"), finishReason: .stop))),
                .planProposed(round: 0, plan: plan),
            ]
        ]
        for step in plan.steps {
            let turn = ActivityKey(step: step.id, attempt: 1, callIndex: 0)
            let tool = ActivityKey(step: step.id, attempt: 1, callIndex: 1)
            let answer = ActivityKey(step: step.id, attempt: 1, callIndex: 2)
            let call = ToolCall(id: "call_\(step.id)", name: "echo", arguments: #"{"text":"hello"}"#)
            let usage = Usage(inputTokens: 300, outputTokens: 20)
            batches += [
                [.stepStarted(stepID: step.id, attempt: 1), .activityStarted(key: turn, kind: .model(purpose: .execute))],
                [
                    .activityCompleted(
                        key: turn,
                        result: .model(ChatResponse(message: .assistant(nil, toolCalls: [call]), finishReason: .toolCalls, usage: usage))
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
        }
        return batches
    }

    /// Steps giving a journal of about `events` events.
    public static func steps(forEvents events: Int) -> Int {
        max(1, (events - 3) / 8)
    }

    /// Creates a run in `store` and appends the fixture's batches; returns the run's id.
    @discardableResult
    public static func write(steps: Int, to store: any RunStore, onAppend: (Duration) -> Void = { _ in }) async throws -> RunID {
        let id = RunID.make()
        let clock = ContinuousClock()
        var sequence = try await store.createRun(
            id: id, goal: "journal", configuration: RunConfiguration(model: "bench", tools: []), at: Date()
        ).lastSequence
        for batch in batches(steps: steps) {
            let start = clock.now
            sequence = try await store.append(batch, to: id, expectedSequence: sequence, at: Date())
            onAppend(clock.now - start)
        }
        return id
    }
}
