import Foundation
import Testing
import Troupe
import TroupeTesting

@Suite struct CircuitBreakerTests {
    @Test func opensAfterConsecutiveFailuresProbesAfterTheCoolDownAndRecovers() {
        var permitted = false
        var breaker = CircuitBreaker(policy: .init(consecutiveFailures: 3, coolDownSeconds: 30))
        for second in 0..<3 {
            permitted = breaker.permit(at: Double(second))
            #expect(permitted)
            breaker.record(failed: true, at: Double(second))
        }
        #expect(breaker.state == .open)
        permitted = breaker.permit(at: 31.9)
        #expect(!permitted)
        permitted = breaker.permit(at: 32)
        #expect(permitted, "the cool-down has passed: one probe")
        #expect(breaker.state == .halfOpen)
        permitted = breaker.permit(at: 32.5)
        #expect(!permitted, "one probe at a time")
        breaker.record(failed: true, at: 33)
        #expect(breaker.state == .open, "a failed probe opens it again")
        permitted = breaker.permit(at: 40)
        #expect(!permitted)
        permitted = breaker.permit(at: 63)
        #expect(permitted)
        breaker.record(failed: false, at: 63)
        #expect(breaker.state == .closed)
        permitted = breaker.permit(at: 64)
        #expect(permitted)
    }

    @Test func opensWhenTheFailureRateOverTheWindowIsTooHigh() {
        var permitted = false
        var breaker = CircuitBreaker(policy: .init(consecutiveFailures: 100, failureRate: 0.5, window: 10, minimumCalls: 10))
        for call in 0..<9 {
            permitted = breaker.permit(at: 0)
            #expect(permitted)
            breaker.record(failed: call.isMultiple(of: 2), at: 0)
        }
        #expect(breaker.state == .closed, "nine calls are fewer than the minimum")
        permitted = breaker.permit(at: 0)
        #expect(permitted)
        breaker.record(failed: false, at: 0)
        #expect(breaker.state == .open, "5 of the last 10 failed")
    }

    @Test func successesKeepItClosed() {
        var permitted = false
        var breaker = CircuitBreaker(policy: .init(consecutiveFailures: 2, window: 4, minimumCalls: 4))
        for call in 0..<50 {
            permitted = breaker.permit(at: Double(call))
            #expect(permitted)
            breaker.record(failed: call.isMultiple(of: 4), at: Double(call))
        }
        #expect(breaker.state == .closed)
    }

    @Test func theModelRefusesCallsWhileOpenAndRecoversWhenTheServerDoes() async throws {
        let unavailable = TroupeError(.modelAPI, "HTTP 503", details: ["status": "503"])
        let scripted = ScriptedModel([
            .failure(unavailable), .failure(unavailable), .failure(unavailable), .response(ChatResponse.text("back")),
        ])
        let clock = TestClock()
        let states = Recorder<CircuitBreaker.State>()
        let model = CircuitBreakerModel(
            scripted, name: "http://127.0.0.1:1/v1", policy: .init(consecutiveFailures: 3, coolDownSeconds: 30), clock: clock,
            onStateChange: states.add)
        let request = ChatRequest(messages: [.user("hi")])
        for _ in 0..<3 {
            await #expect(throws: TroupeError.self) { try await model.complete(request) }
        }
        let refused = await #expect(throws: TroupeError.self) { try await model.complete(request) }
        #expect(refused?.code == .circuitOpen)
        #expect(refused?.message.contains("http://127.0.0.1:1/v1") == true)
        #expect(refused?.isRetryable == false)
        #expect(scripted.requests.count == 3, "the open breaker did not call the server")
        #expect(model.state == .open)

        clock.advance(by: .seconds(30))
        #expect(try await model.complete(request).message.content == "back")
        #expect(model.state == .closed)
        #expect(states.all == [.open, .halfOpen, .closed])
    }

    @Test func refusedRequestsDoNotCountAsTheServerFailing() async throws {
        let refused = TroupeError(.invalidInput, "HTTP 400", details: ["status": "400"])
        let scripted = ScriptedModel(Array(repeating: .failure(refused), count: 5))
        let model = CircuitBreakerModel(scripted, name: "m", policy: .init(consecutiveFailures: 2), clock: TestClock())
        for _ in 0..<5 {
            let error = await #expect(throws: TroupeError.self) { try await model.complete(ChatRequest(messages: [.user("hi")])) }
            #expect(error?.code == .invalidInput)
        }
        #expect(model.state == .closed)
        #expect(scripted.requests.count == 5)
    }
}
