import Foundation
import Logging
import MetricsTestKit
import Testing
import Troupe
import TroupeTesting

/// The resilience wrappers against a real HTTP server that misbehaves, and in whole runs.
@Suite struct ResilienceEndToEndTests {
    static let overloaded = #"{"error":{"message":"overloaded","type":"server_error"}}"#
    static let request = ChatRequest(messages: [.user("hi")])

    @Test func theBreakerOpensUnderSustainedFailureAndRecoversWithTheServer() async throws {
        try await MockOpenAIServer.withServer { mock in
            for _ in 0..<3 { mock.enqueue(.http(status: 503, body: Self.overloaded)) }
            let clock = TestClock()
            let metrics = TestMetrics()
            let name = "m@\(mock.baseURL)"
            let breaker = CircuitBreakerModel(
                try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m")), name: name,
                policy: CircuitBreaker.Policy(consecutiveFailures: 3, coolDownSeconds: 30), clock: clock, metrics: metrics)
            let model = try RetryingModel(breaker, policy: RetryPolicy(maxAttempts: 1))
            let gauge = try metrics.expectGauge("troupe_model_circuit_state", [("model", name)])
            #expect(gauge.lastValue == 0)

            for _ in 0..<3 {
                let error = await #expect(throws: TroupeError.self) { try await model.complete(Self.request) }
                #expect(error?.details["status"] == "503")
            }
            #expect(breaker.state == .open)
            #expect(gauge.lastValue == 2)

            let refused = await #expect(throws: TroupeError.self) { try await model.complete(Self.request) }
            #expect(refused?.code == .circuitOpen)
            #expect(refused?.message.contains("HTTP 503") == true, "the refusal says what the server last did")
            #expect(mock.requestCount == 3, "an open breaker does not call the server")
            #expect(try metrics.expectCounter("troupe_model_circuit_refusals_total", [("model", name)]).totalValue == 1)

            // The server has recovered (no more faults queued); after the cool-down a probe finds out.
            clock.advance(by: .seconds(30))
            let answer = try await model.complete(Self.request)
            #expect(answer.message.content?.isEmpty == false)
            #expect(breaker.state == .closed)
            #expect(gauge.lastValue == 0)
            #expect(mock.requestCount == 4)
        }
    }

    /// The primary endpoint keeps failing: the run is carried by the fallback, the primary's breaker
    /// opens so it stops being called, and the journal says who failed and who answered.
    @Test func aRunFallsBackToAnotherEndpointWhenThePrimaryIsDown() async throws {
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 2)) { primary in
            try await MockOpenAIServer.withServer(configuration: .init(planSteps: 2)) { backup in
                for _ in 0..<50 { primary.enqueue(.http(status: 503, body: Self.overloaded)) }
                let resilience = ModelResilience(
                    retry: RetryPolicy(maxAttempts: 2, initialBackoffSeconds: 0.01, maxBackoffSeconds: 0.01),
                    circuitBreaker: CircuitBreaker.Policy(consecutiveFailures: 2, coolDownSeconds: 600),
                    fallbacks: [ModelEndpoint(baseURL: backup.baseURL, model: "backup-model")]
                )
                let model = try resilience.model(
                    primary: ModelEndpoint(baseURL: primary.baseURL, model: "primary-model"),
                    httpClient: OpenAIChatModel.sharedHTTPClient, logger: Logger(label: "test"))
                let store = InMemoryRunStore()
                let final = try await makeDriver(store: store, model: model, tools: [])
                    .run(goal: "Carry on", configuration: RunConfiguration(model: "primary-model", tools: []))
                #expect(final.status == .succeeded)
                #expect(primary.requestCount == 2, "two failures opened the primary's breaker")
                let models = final.activities.values.compactMap { record -> String? in
                    if case .model(let response)? = record.result { response.model } else { nil }
                }
                #expect(!models.isEmpty && models.allSatisfy { $0 == "backup-model" })
                let fallbacks = try await store.events(of: final.runID).compactMap { stored -> TroupeError? in
                    if case .modelCallRetried(_, _, let error, _) = stored.event, error.details["fallbackTo"] != nil { error } else { nil }
                }
                #expect(fallbacks.count == models.count, "every call's fallback is on record")
                #expect(fallbacks.first?.details["status"] == "503")
                #expect(fallbacks.dropFirst(2).allSatisfy { $0.code == .circuitOpen })
                #expect(fallbacks.allSatisfy { $0.details["fallbackTo"] == "backup-model@\(backup.baseURL)" })
            }
        }
    }

    static let plan = #"{"steps":[{"id":"s1","title":"Echo","instruction":"Echo twice.","tools":["echo"],"dependsOn":[]}]}"#

    static let interleavedByIndex = [
        #"{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"echo","arguments":""}}]}}]}"#,
        #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c2","type":"function","function":{"name":"echo","arguments":"{\"te"}}]}}]}"#,
        #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"text\":\"one\"}"}}]}}]}"#,
        #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"xt\":\"two\"}"}}]}}]}"#,
        #"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        "[DONE]",
    ]

    static let withoutIndex = [
        #"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c1","type":"function","function":{"name":"echo","arguments":"{\"text\":"}}]}}]}"#,
        #"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"\"one\"}"}}]}}]}"#,
        #"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c2","type":"function","function":{"name":"echo","arguments":"{\"text\":\"two\"}"}}]}}]}"#,
        #"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        "[DONE]",
    ]

    /// Two parallel tool calls streamed interleaved (by `index`), or one after the other without
    /// `index` as some servers send them: both run, and their results go back in call order.
    @Test(arguments: [interleavedByIndex, withoutIndex])
    func parallelToolCallsStreamedEitherWayCarryARun(chunks: [String]) async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                .content(Self.plan),
                .http(status: 200, headers: ["content-type": "text/event-stream"], body: chunks.map { "data: \($0)\n\n" }.joined()))
            let echo = CountingTool()
            var configuration = RunConfiguration(model: "m", tools: [])
            configuration.stream = true
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [echo])
                .run(goal: "Echo twice", configuration: configuration)
            #expect(final.status == .succeeded)
            #expect(echo.count == 2)
            let results = mock.requests.last?["messages"]?.arrayValue?.filter { $0["role"]?.stringValue == "tool" } ?? []
            #expect(results.map { $0["tool_call_id"]?.stringValue } == ["c1", "c2"])
            #expect(results.map { $0["content"]?.stringValue } == ["echo: one", "echo: two"])
        }
    }
}
