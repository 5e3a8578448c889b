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

    /// One scripted fault and what the model layer must make of it.
    struct Fault: Sendable, CustomTestStringConvertible {
        var name: String
        var reply: MockOpenAIServer.Reply
        var stream = false
        /// Retried (and the second attempt answers), or surfaced at once with this code.
        var retried: Bool
        var code: TroupeError.Code

        var testDescription: String { name + (stream ? " (stream)" : "") }
    }

    static let json = ["content-type": "application/json"]
    static let faults: [Fault] =
        [408, 409, 500, 502, 503].map {
            Fault(name: "HTTP \($0)", reply: .http(status: $0, body: overloaded), retried: true, code: .modelAPI)
        }
        + [
            Fault(
                name: "HTTP 429 with retry-after-ms",
                reply: .http(status: 429, headers: json.merging(["retry-after-ms": "5"]) { $1 }, body: overloaded),
                retried: true, code: .rateLimited),
            Fault(
                name: "HTTP 429 with retry-after",
                reply: .http(status: 429, headers: json.merging(["retry-after": "0"]) { $1 }, body: overloaded),
                retried: true, code: .rateLimited),
            Fault(name: "connection reset", reply: .dropConnection, retried: true, code: .transport),
            Fault(name: "hang", reply: .hang, retried: true, code: .timeout),
            Fault(name: "hang", reply: .hang, stream: true, retried: true, code: .timeout),
            Fault(name: "stall before content", reply: .stall([]), stream: true, retried: true, code: .timeout),
            Fault(
                name: "stream cut before content", reply: .cutStream([#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#]),
                stream: true, retried: true, code: .transport),
            Fault(
                name: "error object mid-stream",
                reply: .http(
                    status: 200, headers: ["content-type": "text/event-stream"],
                    body: "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n"),
                stream: true, retried: true, code: .modelAPI),
        ]
        + [
            (400, TroupeError.Code.invalidInput), (401, .authentication), (403, .authentication), (404, .invalidInput),
            (422, .invalidInput),
        ]
        .map { Fault(name: "HTTP \($0.0)", reply: .http(status: $0.0, body: overloaded), retried: false, code: $0.1) }
        + [
            Fault(
                name: "non-JSON body", reply: .http(status: 200, body: "<html>Bad gateway</html>"), retried: false,
                code: .malformedModelResponse)
        ]

    /// Each fault the mock can play, through the real client and a retrying model: what is
    /// retried, after what, and what is not.
    @Test(arguments: faults)
    func eachFaultIsRetriedOrSurfacedAsItShouldBe(fault: Fault) async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(fault.reply)
            let attempts = Recorder<ModelAttempt>()
            // A fault that waits is cut after 2 s — long enough for the retry's answer to arrive on
            // a loaded machine; the others keep the default limits, which no answer comes near.
            let timeouts = fault.code == .timeout ? ModelTimeouts(firstByteSeconds: 2, idleSeconds: 2) : ModelTimeouts()
            let client = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m", timeouts: timeouts))
            let model = try RetryingModel(
                client, policy: RetryPolicy(maxAttempts: 2, initialBackoffSeconds: 0.001, maxBackoffSeconds: 0.001), onAttempt: attempts.add
            )
            let request = ChatRequest(messages: [.user("hi")])
            do {
                let answer = fault.stream ? try await model.collect(request) : try await model.complete(request)
                #expect(fault.retried, "answered: \(answer.message.content ?? "")")
                #expect(mock.requestCount == 2)
                #expect(attempts.all.count == 1)
                #expect(attempts.all.first?.error.code == fault.code)
                #expect(attempts.all.first?.error.details["model"] == "m", "the journaled attempt names the model")
                #expect(attempts.all.first?.retryDelaySeconds.map { $0 <= 0.005 } == true, "a short wait, retry-after included")
            } catch let error as TroupeError {
                #expect(!fault.retried, "\(error.message)")
                #expect(error.code == fault.code)
                #expect(error.message.contains(mock.baseURL))
                #expect(error.details["model"] == "m")
                #expect(mock.requestCount == 1, "not retried")
            }
        }
    }
}
