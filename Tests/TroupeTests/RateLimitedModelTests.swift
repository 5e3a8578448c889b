import Foundation
import Testing
import Troupe
import TroupeTesting

@Suite struct RateLimitedModelTests {
    @Test func aBucketServesCallersInOrderAndRefillsOverTime() {
        var bucket = TokenBucket(perMinute: 60, at: 0)
        #expect(bucket.reserve(60, at: 0) == 0, "full at the start")
        #expect(bucket.reserve(1, at: 0) == 1, "one unit a second")
        #expect(bucket.reserve(1, at: 0) == 2, "the next caller waits behind the first")
        #expect(bucket.reserve(1, at: 10) == 0, "ten seconds refilled ten units")
        bucket.adjust(by: 100, at: 10)
        #expect(bucket.level == 60, "never above capacity")
        bucket.adjust(by: -90, at: 10)
        #expect(bucket.reserve(0, at: 10) == 30, "real usage above the estimate is paid for later")
        var empty = TokenBucket(perMinute: 0, at: 0)
        #expect(empty.reserve(1, at: 0) == .infinity)
    }

    @Test func requestsBeyondTheLimitWaitTheirTurn() async throws {
        let scripted = ScriptedModel(Array(repeating: .response(ChatResponse.text("ok")), count: 3))
        let clock = TestClock()
        let model = RateLimitedModel(scripted, limiter: RateLimiter(limits: RateLimits(requestsPerMinute: 2), clock: clock))
        let request = ChatRequest(messages: [.user("hi")])
        async let calls = withThrowingTaskGroup(of: ChatResponse.self) { group in
            for _ in 0..<3 { group.addTask { try await model.complete(request) } }
            return try await group.reduce(into: 0) { count, _ in count += 1 }
        }
        await clock.waitForSleepers(1)
        #expect(scripted.requests.count == 2, "two requests a minute: the third waits")
        clock.advance(by: .seconds(29))
        #expect(clock.sleeperCount == 1)
        clock.advance(by: .seconds(1))
        #expect(try await calls == 3)
        #expect(scripted.requests.count == 3)
    }

    @Test func tokensAreEstimatedBeforeAndCorrectedAfter() async throws {
        let request = ChatRequest(messages: [.user(String(repeating: "x", count: 400))], maxTokens: 100)
        #expect(RateLimitedModel.estimatedTokens(request) == 200)
        // The call used 1,000 tokens where 200 were estimated: the next caller waits for the rest.
        let scripted = ScriptedModel([
            .response(ChatResponse.text("big", usage: Usage(inputTokens: 900, outputTokens: 100))), .response(ChatResponse.text("next")),
        ])
        let clock = TestClock()
        let model = RateLimitedModel(scripted, limiter: RateLimiter(limits: RateLimits(tokensPerMinute: 1_000), clock: clock))
        _ = try await model.complete(request)
        let next = Task { try await model.complete(request) }
        await clock.waitForSleepers(1)
        #expect(scripted.requests.count == 1)
        clock.advance(by: .seconds(12))  // 200 tokens at 1,000 a minute
        #expect(try await next.value.message.content == "next")
    }

    @Test func oneLimiterPerEndpointIsShared() {
        let first = RateLimiter.shared(for: "http://127.0.0.1:9/v1", limits: RateLimits(requestsPerMinute: 10))
        let second = RateLimiter.shared(for: "http://127.0.0.1:9/v1", limits: RateLimits(requestsPerMinute: 99))
        let other = RateLimiter.shared(for: "http://127.0.0.1:10/v1", limits: RateLimits(requestsPerMinute: 10))
        #expect(first === second)
        #expect(first !== other)
        #expect(second.limits.requestsPerMinute == 10)
    }

    /// The real client to `mock` behind a limiter with no limits of its own, on a test clock.
    private func limitedClient(_ mock: MockOpenAIServer) throws -> (RateLimitedModel, TestClock) {
        let clock = TestClock()
        let client = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
        return (RateLimitedModel(client, limiter: RateLimiter(limits: RateLimits(), clock: clock)), clock)
    }

    @Test func resetHeadersAreReadAsOpenAIAndOthersSendThem() {
        let cases: [(String, Double?)] = [
            ("20ms", 0.02), ("1s", 1), ("6m0s", 360), ("1m30.5s", 90.5), ("1h2m3s", 3_723), ("2.5", 2.5), (" 7 ", 7),
            ("", nil), ("soon", nil), ("5x", nil), ("-1", nil), ("1s2", nil),
        ]
        for (text, seconds) in cases {
            #expect(RateLimitStatus.seconds(in: text) == seconds, "\(text)")
        }
        let headers = ["x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s", "x-ratelimit-remaining-tokens": "x"]
        let status = RateLimitStatus { headers[$0] }
        #expect(status == RateLimitStatus(remainingRequests: 0, requestsResetSeconds: 1))
        #expect(RateLimitStatus { _ in nil } == nil)
    }

    /// The server says its request window is spent: the next call waits for the reset instead of
    /// earning a 429, with no limits configured here at all.
    @Test(arguments: [false, true])
    func aSpentServerWindowHoldsTheNextCallUntilItResets(stream: Bool) async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(.headers(["x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"]))
            let (model, clock) = try limitedClient(mock)
            let request = ChatRequest(messages: [.user("hi")])
            let first = stream ? try await model.collect(request) : try await model.complete(request)
            #expect(first.rateLimit?.remainingRequests == 0)
            let next = Task { try await model.complete(request) }
            await clock.waitForSleepers(1)
            clock.advance(by: .milliseconds(1_999))
            #expect(clock.sleeperCount == 1)
            #expect(mock.requestCount == 1)
            clock.advance(by: .milliseconds(1))
            _ = try await next.value
            #expect(mock.requestCount == 2)
        }
    }

    @Test func aServerTokenWindowTooSmallForTheNextRequestHoldsIt() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(.headers(["x-ratelimit-remaining-tokens": "300", "x-ratelimit-reset-tokens": "6m0s"]))
            let (model, clock) = try limitedClient(mock)
            _ = try await model.complete(ChatRequest(messages: [.user("hi")], maxTokens: 100))
            // About 100 tokens fit in the 300 left; 600 do not.
            _ = try await model.complete(ChatRequest(messages: [.user("hi")], maxTokens: 100))
            let big = Task { try await model.complete(ChatRequest(messages: [.user("hi")], maxTokens: 600)) }
            await clock.waitForSleepers(1)
            #expect(mock.requestCount == 2)
            clock.advance(by: .seconds(360))
            _ = try await big.value
            #expect(mock.requestCount == 3)
        }
    }

    /// One caller's 429 with `retry-after` holds the other callers of the endpoint too.
    @Test func a429WithRetryAfterHoldsEveryCaller() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                .http(
                    status: 429, headers: ["content-type": "application/json", "retry-after": "5"],
                    body: #"{"error":{"message":"slow down"}}"#))
            let (model, clock) = try limitedClient(mock)
            let refused = await #expect(throws: TroupeError.self) { try await model.complete(ChatRequest(messages: [.user("hi")])) }
            #expect(refused?.code == .rateLimited)
            let other = Task { try await model.complete(ChatRequest(messages: [.user("other")])) }
            await clock.waitForSleepers(1)
            clock.advance(by: .milliseconds(4_900))
            #expect(clock.sleeperCount == 1)
            clock.advance(by: .milliseconds(100))
            _ = try await other.value
            #expect(mock.requestCount == 2)
        }
    }
}
