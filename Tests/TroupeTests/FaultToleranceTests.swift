import Foundation
import Testing
import Troupe
import TroupeTesting

/// Whole runs against the mock server while it misbehaves.
@Suite struct FaultToleranceTests {
    static let overloaded = #"{"error":{"message":"overloaded","type":"server_error"}}"#

    private func run(faults: [MockOpenAIServer.Reply], stream: Bool) async throws -> (RunStateMachine, [RunEvent]) {
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 2)) { mock in
            for fault in faults { mock.enqueue(fault) }
            let client = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            let model = try RetryingModel(client, policy: RetryPolicy(initialBackoffSeconds: 0.01, maxBackoffSeconds: 0.05))
            let store = InMemoryRunStore()
            var configuration = RunConfiguration(model: "m", tools: [])
            configuration.stream = stream
            let final = try await makeDriver(store: store, model: model, tools: []).run(goal: "Survive", configuration: configuration)
            return (final, try await store.events(of: final.runID).map(\.event))
        }
    }

    /// 429 (with retry-after-ms), 503, a dropped connection and a stream cut mid-answer: the run
    /// completes with the same result as without faults; the retries and the call that gave up
    /// are in the journal.
    @Test(arguments: [false, true])
    func aRunSurvivesMixedFaultsWithTheSameResult(stream: Bool) async throws {
        let (clean, _) = try await run(faults: [], stream: stream)
        #expect(clean.status == .succeeded)

        let faults: [MockOpenAIServer.Reply] = [
            .http(status: 429, headers: ["content-type": "application/json", "retry-after-ms": "20"], body: Self.overloaded),
            .http(status: 503, body: Self.overloaded),
            .dropConnection,
            .cutStream([#"{"choices":[{"index":0,"delta":{"content":"par"}}]}"#]),
        ]
        let (final, events) = try await run(faults: faults, stream: stream)
        #expect(final.status == .succeeded)
        #expect(final.answer == clean.answer)
        #expect(final.steps.map(\.output) == clean.steps.map(\.output))

        let retries = events.filter { if case .modelCallRetried = $0 { true } else { false } }
        let failures = events.filter { if case .activityFailed = $0 { true } else { false } }
        #expect(retries.count >= 2, "the 429 and the 503 were retried inside the call")
        #expect(retries.count + failures.count == faults.count, "every fault is on record")
        if case .modelCallRetried(_, _, let error, let delay)? = retries.first {
            #expect(error.code == .rateLimited)
            #expect(delay == 0.02, "retry-after-ms was honoured")
        }
    }
}
