import Foundation
import Synchronization
import Testing
import Troupe
import TroupeTesting

@Suite struct RetryingModelTests {
    static func failure(_ status: Int, retryAfter: String? = nil) -> TroupeError {
        let code: TroupeError.Code =
            switch status {
            case 401, 403: .authentication
            case 429: .rateLimited
            case 400..<500 where status != 408 && status != 409: .invalidInput
            default: .modelAPI
            }
        var details = ["status": "\(status)", "endpoint": "http://127.0.0.1:1/v1/chat/completions"]
        details["retryAfter"] = retryAfter
        return TroupeError(code, "HTTP \(status)", details: details)
    }

    @Test func retriesWhatMayWorkAndHonoursRetryAfter() async throws {
        let scripted = ScriptedModel([
            .failure(Self.failure(429, retryAfter: "2")), .failure(Self.failure(503)), .response(ChatResponse.text("done")),
        ])
        let clock = TestClock()
        let reports = Recorder<ModelAttempt>()
        // Full jitter picks the top of the range here, so the backoff is exactly 0.5 s × 2.
        let model = try RetryingModel(scripted, clock: clock, jitter: { $0.upperBound }, onAttempt: reports.add)
        let call = Task { try await model.complete(ChatRequest(messages: [.user("hi")])) }

        await clock.waitForSleepers(1)
        clock.advance(by: .milliseconds(1_999))
        #expect(clock.sleeperCount == 1, "retry-after: 2 is a two-second wait")
        clock.advance(by: .milliseconds(1))
        await clock.waitForSleepers(1)
        clock.advance(by: .milliseconds(1_000))

        #expect(try await call.value.message.content == "done")
        #expect(scripted.requests.count == 3)
        #expect(reports.all.map(\.number) == [1, 2])
        #expect(reports.all.map(\.error.code) == [.rateLimited, .modelAPI])
        #expect(reports.all.map(\.retryDelaySeconds) == [2.0, 1.0])
    }

    @Test(arguments: [400, 401, 403, 404, 422])
    func refusedRequestsAreNeverRetried(status: Int) async throws {
        let scripted = ScriptedModel([.failure(Self.failure(status)), .response(ChatResponse.text("never"))])
        let reports = Recorder<ModelAttempt>()
        let model = try RetryingModel(scripted, clock: TestClock(), onAttempt: reports.add)
        let error = await #expect(throws: TroupeError.self) { try await model.complete(ChatRequest(messages: [.user("hi")])) }
        #expect(error?.details["status"] == "\(status)")
        #expect(error?.details["attempts"] == nil)
        #expect(scripted.requests.count == 1)
        #expect(reports.all.map(\.retryDelaySeconds) == [nil])
    }

    @Test(arguments: [408, 409, 429, 500, 502, 503])
    func serverSideFailuresAreRetried(status: Int) {
        #expect(Self.failure(status).isRetryable)
        #expect(TroupeError(.transport, "reset").isRetryable)
        #expect(TroupeError(.timeout, "slow").isRetryable)
        #expect(!TroupeError(.contentFiltered, "no").isRetryable)
    }

    @Test func givesUpAfterTheLastAttemptWithTheLastError() async throws {
        let scripted = ScriptedModel([.failure(Self.failure(500)), .failure(Self.failure(502)), .failure(Self.failure(503))])
        let model = try RetryingModel(scripted, clock: TestClock(), jitter: { $0.lowerBound })
        let error = await #expect(throws: TroupeError.self) { try await model.complete(ChatRequest(messages: [.user("hi")])) }
        #expect(error?.details["status"] == "503")
        #expect(error?.details["attempts"] == "3")
        #expect(error?.message.contains("gave up after 3 attempts") == true)
        #expect(scripted.requests.count == 3)
    }

    @Test func aWaitPastTheDeadlineIsNotStarted() async throws {
        let scripted = ScriptedModel([.failure(Self.failure(429, retryAfter: "30")), .response(ChatResponse.text("late"))])
        let clock = TestClock()
        let model = try RetryingModel(scripted, policy: RetryPolicy(deadlineSeconds: 10), clock: clock)
        let error = await #expect(throws: TroupeError.self) { try await model.complete(ChatRequest(messages: [.user("hi")])) }
        #expect(error?.code == .rateLimited)
        #expect(error?.message.contains("deadline of 10.0 s") == true)
        #expect(scripted.requests.count == 1)
        #expect(clock.now.offset == .zero)
    }

    @Test func retryAfterIsReadInEveryForm() {
        let now = Date(timeIntervalSince1970: 1_764_000_000)
        func wait(_ text: String) -> Double? {
            TroupeError(.rateLimited, "429", details: ["retryAfter": text]).retryAfterSeconds(now: now)
        }
        #expect(wait("250ms") == 0.25)
        #expect(wait("3") == 3)
        #expect(wait("1.5") == 1.5)
        #expect(wait("Mon, 24 Nov 2025 16:00:07 GMT") == 7)
        #expect(wait("Mon, 24 Nov 2025 15:00:00 GMT") == 0)  // in the past: no wait
        #expect(wait("soon") == nil)
        #expect(wait("-4") == 0)
        #expect(TroupeError(.rateLimited, "429").retryAfterSeconds(now: now) == nil)
    }

    @Test func invalidPoliciesAreRefusedWithTheFieldNamed() {
        let error = #expect(throws: TroupeError.self) { try RetryPolicy(maxAttempts: 0).validated() }
        #expect(error?.message.contains("maxAttempts") == true)
        #expect(throws: TroupeError.self) { try RetryPolicy(deadlineSeconds: .infinity).validated() }
    }

    // MARK: Streams

    /// Streams scripted per call: some events, then either the end or an error.
    final class StreamScript: ChatModel, Sendable {
        private let scripts: Mutex<[(events: [ChatStreamEvent], error: TroupeError?)]>
        private let calls = Mutex(0)
        var callCount: Int { calls.withLock { $0 } }

        init(_ scripts: [(events: [ChatStreamEvent], error: TroupeError?)]) {
            self.scripts = Mutex(scripts)
        }

        func complete(_ request: ChatRequest) async throws -> ChatResponse {
            throw TroupeError(.internal, "stream only")
        }

        func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
            calls.withLock { $0 += 1 }
            let script = scripts.withLock { $0.isEmpty ? ([], TroupeError(.internal, "no script")) : $0.removeFirst() }
            return AsyncThrowingStream { continuation in
                for event in script.events { continuation.yield(event) }
                continuation.finish(throwing: script.error)
            }
        }
    }

    @Test func aStreamThatFailsBeforeAnyContentIsRetried() async throws {
        let answer = ChatResponse(message: .assistant("hello"), finishReason: .stop)
        let model = StreamScript([
            ([], TroupeError(.transport, "connection reset")),
            ([.textDelta("hel"), .textDelta("lo"), .completed(answer)], nil),
        ])
        let retrying = try RetryingModel(model, clock: TestClock(), jitter: { $0.lowerBound })
        var deltas: [ChatStreamEvent] = []
        let response = try await retrying.collect(ChatRequest(messages: [.user("hi")])) { deltas.append($0) }
        #expect(response == answer)
        #expect(deltas == [.textDelta("hel"), .textDelta("lo")])
        #expect(model.callCount == 2)
    }

    @Test func aStreamThatBreaksAfterContentIsNotRestarted() async throws {
        let model = StreamScript([
            ([.textDelta("par")], TroupeError(.transport, "the stream ended early")),
            ([.completed(ChatResponse(message: .assistant("twice"), finishReason: .stop))], nil),
        ])
        let reports = Recorder<ModelAttempt>()
        let retrying = try RetryingModel(model, clock: TestClock(), onAttempt: reports.add)
        var deltas: [ChatStreamEvent] = []
        let error = await #expect(throws: TroupeError.self) {
            _ = try await retrying.collect(ChatRequest(messages: [.user("hi")])) { deltas.append($0) }
        }
        #expect(error?.code == .transport)
        #expect(error?.details["deliveredEvents"] == "1")
        #expect(error?.message.contains("not retried") == true)
        #expect(deltas == [.textDelta("par")])
        #expect(model.callCount == 1)
        #expect(reports.all.map(\.retryDelaySeconds) == [nil])
    }

    @Test func aCancelledCallIsNotRetried() async throws {
        let scripted = ScriptedModel([.failure(Self.failure(503)), .response(ChatResponse.text("never"))])
        let clock = TestClock()
        let model = try RetryingModel(scripted, clock: clock, jitter: { $0.upperBound })
        let call = Task { try await model.complete(ChatRequest(messages: [.user("hi")])) }
        await clock.waitForSleepers(1)
        call.cancel()
        let error = await #expect(throws: (any Error).self) { try await call.value }
        #expect((error as? TroupeError)?.code == .cancelled || error is CancellationError)
        #expect(scripted.requests.count == 1)
    }
}

/// Retries made inside a run are journaled with the call they belong to and shown by the report.
@Suite struct RetriesInARunTests {
    @Test func eachRetryIsJournaledBeforeTheCallsOutcomeAndReported() async throws {
        let unavailable = TroupeError(.modelAPI, "HTTP 503: overloaded", details: ["status": "503"])
        let scripted = ScriptedModel([
            .failure(TroupeError(.rateLimited, "HTTP 429: slow down", details: ["status": "429", "retryAfter": "0"])),
            .response(.plan(plan([("s1", [], [])]))),
            .failure(unavailable), .failure(unavailable), .response(.text("done")),
        ])
        let model = try RetryingModel(scripted, policy: RetryPolicy(maxAttempts: 3), clock: TestClock(), jitter: { $0.lowerBound })
        let store = InMemoryRunStore()
        let final = try await makeDriver(store: store, model: model, tools: []).run(goal: "g", configuration: RunConfiguration(model: "m"))
        #expect(final.status == .succeeded)

        let events = try await store.events(of: final.runID).map(\.event)
        let retried = events.compactMap { event -> (ActivityKey, Int, TroupeError.Code)? in
            if case .modelCallRetried(let key, let attempt, let error, _) = event { (key, attempt, error.code) } else { nil }
        }
        #expect(retried.map(\.0.step) == ["plan", "s1", "s1"])
        #expect(retried.map(\.1) == [1, 1, 2])
        #expect(retried.map(\.2) == [.rateLimited, .modelAPI, .modelAPI])
        // Each retry comes before its call's outcome, in the same append.
        let planRetry = try #require(events.firstIndex { if case .modelCallRetried = $0 { true } else { false } })
        guard case .activityCompleted(let key, _) = events[planRetry + 1] else {
            Issue.record("the plan call's outcome does not follow its retry")
            return
        }
        #expect(key.step == "plan")

        let folded = try RunStateMachine(runID: final.runID, replaying: try await store.events(of: final.runID))
        let report = RunReport(summary: try await store.requireRun(final.runID), machine: folded)
        #expect(report.planningRetries.count == 1)
        #expect(report.planningRetries.first?.contains("attempt 1: rateLimited: HTTP 429: slow down; retried after 0.0 s") == true)
        #expect(report.steps.first?.modelRetries.count == 2)
    }
}
