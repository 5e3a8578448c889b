import Foundation
import Testing
import Troupe
@testable import TroupeAgents
@testable import TroupeModels
import TroupeTesting

/// The model client against what real OpenAI-compatible servers send (issue 21), one test (or
/// more) per item, each named after it and after the server behaviour it plays.
@Suite struct ModelClientReviewTests {
    static let request = ChatRequest(messages: [.user("What is the weather and the time?")])

    static func sse(_ chunks: [String]) -> MockOpenAIServer.Reply {
        .http(status: 200, headers: ["content-type": "text/event-stream"], body: chunks.map { "data: \($0)\r\n\r\n" }.joined())
    }

    static func json(_ body: String, status: Int = 200) -> MockOpenAIServer.Reply {
        .http(status: status, headers: ["content-type": "application/json"], body: body)
    }

    private func model(_ mock: MockOpenAIServer) throws -> OpenAIChatModel {
        try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
    }

    private func error(of body: () async throws -> ChatResponse) async -> TroupeError? {
        do {
            _ = try await body()
            return nil
        } catch {
            return TroupeError.wrap(error)
        }
    }

    // MARK: 1. The rate limiter holding calls for hours

    /// A 429 with `retry-after: 3600` (or a reset sent as a Unix time) holds the endpoint at most
    /// `maxRetryAfter`, and a call whose wait would pass its deadline fails at once (`rateLimited`,
    /// so a fallback is tried) instead of sleeping or starting its request with no time left.
    @Test func item1_serverGivenWaitsAreClampedAndNeverPassTheDeadline() async throws {
        let clock = TestClock()
        let limiter = RateLimiter(limits: RateLimits(), maxServerWait: 60, clock: clock)
        limiter.hold(for: 3_600)
        let model = RateLimitedModel(ScriptedModel([.response(.text("late")), .response(.text("ok"))]), limiter: limiter)
        // With 20 s left of its deadline, a 60 s wait is refused at once.
        let refused = await error {
            try await ModelCallDeadline.within(.seconds(20)) { try await model.complete(Self.request) }
        }
        #expect(refused?.code == .rateLimited)
        #expect(refused?.message.contains("leaving too little of its deadline") == true)
        // With more time than the (clamped) wait, the call waits 60 s, not an hour.
        let waiting = Task { try await ModelCallDeadline.within(.seconds(180)) { try await model.complete(Self.request) } }
        await clock.waitForSleepers(1)
        clock.advance(by: .seconds(60))
        #expect(try await waiting.value.message.content == "late")

        let epoch = RateLimiter(limits: RateLimits(), maxServerWait: 60, clock: clock)
        epoch.observe(RateLimitStatus(remainingRequests: 0, requestsResetSeconds: 1_700_000_000))
        let held = await error {
            try await ModelCallDeadline.within(.seconds(30)) {
                try await RateLimitedModel(ScriptedModel([.response(.text("x"))]), limiter: epoch).complete(Self.request)
            }
        }
        #expect(held == nil, "a reset sent as a Unix time in the past holds nothing")
    }

    @Test(arguments: ["1e16", "1e19ms", "inf", "-5", "nan"])
    func item1_absurdRetryAfterValuesDoNotTrap(value: String) {
        let error = TroupeError(.rateLimited, "429", details: ["retryAfter": value])
        let seconds = error.retryAfterSeconds(now: Date())
        #expect(seconds == nil || (seconds! >= 0 && seconds! <= 31_536_000))
        let limiter = RateLimiter(limits: RateLimits(), maxServerWait: 60)
        limiter.hold(for: seconds ?? .infinity)
    }

    // MARK: 8. Cancelled waiters keep their reservation

    @Test func item8_aCancelledWaiterGivesItsReservationBack() async throws {
        let clock = TestClock()
        let limiter = RateLimiter(limits: RateLimits(requestsPerMinute: 1), clock: clock)
        try await limiter.acquire(tokens: 0)  // the minute's one request
        let cancelled = Task { try await limiter.acquire(tokens: 0) }
        await clock.waitForSleepers(1)
        cancelled.cancel()
        _ = await cancelled.result
        // Its place is free again: the next caller waits 60 s (one refill), not 120.
        let next = Task { try await limiter.acquire(tokens: 0) }
        await clock.waitForSleepers(1)
        clock.advance(by: .seconds(60))
        try await next.value
        #expect(clock.sleeperCount == 0)
    }

    // MARK: 9. Smaller

    @Test func item9_aLeadingByteOrderMarkDoesNotLoseTheFirstEvent() {
        var parser = SSEParser()
        let bytes = Array("\u{FEFF}data: first\n\ndata: second\n\n".utf8)
        var events: [SSEEvent] = []
        for byte in bytes { events += parser.feed([byte]) }  // split anywhere, the mark too
        #expect(events.map(\.data) == ["first", "second"])
    }

    /// One model's refusal of `response_format` does not turn it off for another model of the
    /// same endpoint; the schema then goes first, in the system message.
    @Test func item9_responseFormatRefusalsAreRememberedPerModelAndTheSchemaGoesFirst() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(
                    #"{"error":{"message":"response_format is not supported by this model","type":"invalid_request_error"}}"#, status: 400),
                .content(#"{"ok": true}"#), .content(#"{"ok": true}"#))
            let schema = JSONSchema.object([.init("ok", .boolean())])
            let request = ChatRequest(
                messages: [.system("You plan."), .user("Go.")], responseFormat: .jsonSchema(name: "answer", schema: schema, strict: true))
            let refusing = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "small-\(UUID())"))
            let other = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "large-\(UUID())"))
            _ = try await refusing.complete(request)
            _ = try await other.complete(request)
            let bodies = mock.requests
            #expect(bodies.count == 3)
            #expect(bodies[1]["response_format"] == nil)
            let first = bodies[1]["messages"]?.arrayValue?.first
            #expect(first?["role"] == "system")
            #expect(first?["content"]?.stringValue?.hasPrefix("You plan.") == true)
            #expect(first?["content"]?.stringValue?.contains("JSON Schema") == true)
            #expect(bodies[1]["messages"]?.arrayValue?.count == 2, "no second system message at the end")
            #expect(bodies[2]["response_format"] != nil, "another model of the endpoint still asks for structured output")
        }
    }

    /// A server that sends no usage keeps the tokens estimate, so the tokens-per-minute limit
    /// still limits.
    @Test func item9_noUsageKeepsTheEstimate() async throws {
        let clock = TestClock()
        let limiter = RateLimiter(limits: RateLimits(tokensPerMinute: 1_000), clock: clock)
        let request = ChatRequest(messages: [.user(String(repeating: "x", count: 2_000))], maxTokens: 100)  // 600 tokens
        let model = RateLimitedModel(
            ScriptedModel([.response(.text("a", usage: .zero)), .response(.text("b", usage: .zero))]), limiter: limiter)
        _ = try await model.complete(request)
        let next = Task { try await model.complete(request) }
        await clock.waitForSleepers(1)
        clock.advance(by: .seconds(60))
        #expect(try await next.value.message.content == "b")
    }

    /// o-series and gpt-5 models refuse `max_tokens`: they get `max_completion_tokens`, by name,
    /// or after a 400 that asks for it (remembered).
    @Test func item9_modelsThatRefuseMaxTokensGetMaxCompletionTokens() async throws {
        #expect(OpenAIChatModel.usesCompletionTokens("o3-mini") && OpenAIChatModel.usesCompletionTokens("gpt-5.1"))
        #expect(OpenAIChatModel.usesCompletionTokens("openai/o4-mini"))
        #expect(!OpenAIChatModel.usesCompletionTokens("gpt-4o") && !OpenAIChatModel.usesCompletionTokens("ollama"))
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(
                    #"{"error":{"message":"Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.","type":"invalid_request_error","param":"max_tokens"}}"#,
                    status: 400))
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "reasoner-\(UUID())"))
            let request = ChatRequest(messages: [.user("hi")], maxTokens: 50)
            _ = try await model.complete(request)
            _ = try await model.complete(request)
            let bodies = mock.requests
            #expect(bodies.count == 3)
            #expect(bodies[0]["max_tokens"] == 50)
            #expect(bodies[1]["max_tokens"] == nil && bodies[1]["max_completion_tokens"] == 50)
            #expect(bodies[2]["max_completion_tokens"] == 50, "remembered")
            let named = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "o3-mini"))
            _ = try await named.complete(request)
            #expect(mock.requests.last?["max_completion_tokens"] == 50)
        }
    }

    // MARK: 2. Parallel tool calls merged into one

    /// Ollama, LiteLLM's Responses bridge and Gemini adapters stream each parallel call with
    /// `index: 0` and its own id.
    @Test func item2_parallelCallsStreamedWithIndexZeroStayApart() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.sse([
                    #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_w","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
                    #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]}}]}"#,
                    #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_t","type":"function","function":{"name":"get_time","arguments":""}}]}}]}"#,
                    #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"tz\":\"UTC\"}"}}]}}]}"#,
                    #"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
                    "[DONE]",
                ]))
            let response = try await model(mock).collect(Self.request)
            #expect(
                response.message.toolCalls == [
                    ToolCall(id: "call_w", name: "get_weather", arguments: #"{"city":"Paris"}"#),
                    ToolCall(id: "call_t", name: "get_time", arguments: #"{"tz":"UTC"}"#),
                ])
        }
    }

    // MARK: 3. Arguments sent as a JSON object

    /// Some llama.cpp server builds and TGI send `arguments` as an object.
    @Test func item3_argumentsSentAsAnObjectAreTakenAsTheirText() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(
                    #"{"model":"m","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":{"city":"Paris","days":2}}}]}}]}"#
                ))
            let response = try await model(mock).complete(Self.request)
            let call = try #require(response.message.toolCalls.first)
            #expect(call.name == "get_weather")
            #expect(try JSONValue.parse(call.arguments) == ["city": "Paris", "days": 2])
        }
    }

    // MARK: 4. stream_options refused

    /// Older Azure API versions and some gateways refuse `stream_options`: the call is asked
    /// again without it, and the endpoint is remembered.
    @Test func item4_aServerThatRefusesStreamOptionsIsAskedAgainWithoutThem() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(
                    #"{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error","param":"stream_options","code":null}}"#,
                    status: 400))
            let model = try model(mock)
            let first = try await model.collect(Self.request)
            #expect(first.message.content?.isEmpty == false)
            _ = try await model.collect(Self.request)
            let bodies = mock.requests
            #expect(bodies.count == 3)
            #expect(bodies[0]["stream_options"] != nil)
            #expect(bodies[1]["stream_options"] == nil && bodies[1]["stream"] == true)
            #expect(bodies[2]["stream_options"] == nil, "the endpoint is remembered")
        }
    }

    // MARK: 5. A cancelled call is no evidence for the circuit breaker

    @Test func item5_aCancelledProbeFreesItsSlotWithoutClosingTheBreaker() {
        var breaker = CircuitBreaker(policy: .init(consecutiveFailures: 1, coolDownSeconds: 10))
        let first = breaker.permit(at: 0)
        #expect(first)
        breaker.record(failed: true, at: 0)
        #expect(breaker.state == .open)
        let probe = breaker.permit(at: 11)
        let second = breaker.permit(at: 11)
        #expect(probe && !second, "one probe at a time")
        breaker.abandon()  // the probe was cancelled (a step's time limit)
        #expect(breaker.state == .halfOpen, "a cancelled probe proves nothing: still half-open")
        let next = breaker.permit(at: 12)
        #expect(next, "its slot is free for the next probe")
    }

    @Test func item5_aCancelledCallDoesNotResetTheFailureCount() async throws {
        let scripted = ScriptedModel([
            .failure(TroupeError(.modelAPI, "HTTP 503")),
            .failure(TroupeError(.cancelled, "The model call was cancelled.")),
            .failure(TroupeError(.modelAPI, "HTTP 503")),
        ])
        let model = CircuitBreakerModel(scripted, name: "m", policy: .init(consecutiveFailures: 2))
        for _ in 0..<3 { _ = try? await model.complete(Self.request) }
        #expect(model.state == .open, "503, cancelled, 503: two failures in a row, the cancellation in between is no success")
    }

    /// A slow call let through while the breaker was closed ends after it opened and went
    /// half-open: its success is not the probe's, and does not close the breaker.
    @Test func item9_aCallFromAnEarlierStateCannotDecideTheProbe() {
        var breaker = CircuitBreaker(policy: .init(consecutiveFailures: 1, coolDownSeconds: 10))
        let slow = breaker.admit(at: 0)
        let failing = breaker.admit(at: 0)
        breaker.record(failing!, failed: true, at: 1)
        #expect(breaker.state == .open)
        let probe = breaker.admit(at: 12)
        #expect(breaker.state == .halfOpen)
        breaker.record(slow!, failed: false, at: 13)
        #expect(breaker.state == .halfOpen, "the slow call's success is not the probe's")
        breaker.record(probe!, failed: false, at: 14)
        #expect(breaker.state == .closed)
    }

    /// What servers send that the JSON reader once got wrong: `-0` lost its sign, `1e400`
    /// refused the whole answer, a lone high surrogate swallowed the escape after it.
    @Test func item9_jsonEdgeCasesAreReadAsTheyAre() throws {
        let negativeZero = try JSONValue.parse("-0")
        #expect(negativeZero.doubleValue == 0 && negativeZero.doubleValue?.sign == .minus)
        #expect(try JSONValue.parse("[1e400, -1e400]") == [.double(.greatestFiniteMagnitude), .double(-.greatestFiniteMagnitude)])
        #expect(try JSONValue.parse(#""\uD800\u0041""#) == .string("\u{FFFD}A"))
        #expect(try JSONValue.parse(#""\uD83D\uDE00""#) == .string("😀"))
        #expect(try JSONValue.parse("0") == .int(0))
    }

    /// A model passing a 23-digit ID (an order number, a snowflake from another system) gets it
    /// to the tool, the journal and the schema check as written, not as `1.2345678901234568e+22`.
    @Test func item9_integersBeyond64BitsKeepTheirDigits() throws {
        let text = #"{"big":12345678901234567890123,"negative":-98765432109876543210,"small":7}"#
        let arguments = try JSONValue.parse(text)
        #expect(arguments["big"] == .bigInteger("12345678901234567890123"))
        #expect(arguments["big"]?.typeName == "integer")
        #expect(arguments["big"]?.intValue == nil)
        #expect(arguments["big"]?.doubleValue == 12345678901234567890123.0)
        #expect(arguments.jsonString == text)

        // Through Codable, as the journal stores and reads tool arguments.
        struct Record: Codable, Equatable { let arguments: JSONValue }
        let reread = try JSONCoding.decode(Record.self, from: JSONCoding.encode(Record(arguments: arguments)))
        #expect(reread.arguments == arguments)
        let foundation = try JSONCoding.decode(Record.self, from: JSONCoding.encoder().encode(Record(arguments: arguments)))
        #expect(foundation.arguments == arguments)

        let schema = JSONSchema.object([.init("big", .integer(minimum: 0))])
        #expect(schema.validate(["big": arguments["big"]!]).isEmpty)
        #expect(!schema.validate(["big": arguments["negative"]!]).isEmpty)

        // Longer than Decimal holds exactly: read as the nearest Double, as before.
        let long = try JSONValue.parse(String(repeating: "9", count: 39))
        #expect(long == .double(1e39))
        #expect(try JSONValue.parse("1.5") == .double(1.5))
    }

    /// Arguments sent as an object (item 3) are written out with their big integers intact.
    @Test func item9_bigIntegersInArgumentsSentAsAnObjectAreWrittenAsTheyCame() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(
                    #"{"model":"m","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":{"id":-34028236692093846346337460743176821145}}}]}}]}"#
                ))
            let response = try await model(mock).complete(Self.request)
            let call = try #require(response.message.toolCalls.first)
            #expect(call.arguments == #"{"id":-34028236692093846346337460743176821145}"#)
        }
    }

    // MARK: Found in the review of these fixes

    /// A model whose stream sends one piece of text and then waits for ever (a slow server).
    private struct StallingModel: ChatModel {
        func complete(_ request: ChatRequest) async throws -> ChatResponse { throw TroupeError(.modelAPI, "HTTP 503") }
        func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
            .producing { continuation in
                continuation.yield(.textDelta("thinking"))
                try await Task.sleep(for: .seconds(3600))
            }
        }
    }

    /// A stream cut by a step timeout or Ctrl-C ends without an error; it is no success either.
    @Test func review_aCancelledStreamDoesNotCloseAHalfOpenBreaker() async throws {
        let model = CircuitBreakerModel(StallingModel(), name: "m", policy: .init(consecutiveFailures: 1, coolDownSeconds: 0))
        _ = try? await model.complete(Self.request)
        let probing = Task {
            for try await _ in model.stream(Self.request) { withUnsafeCurrentTask { $0?.cancel() } }
        }
        _ = await probing.result
        #expect(model.state == .halfOpen, "the cancelled probe decided nothing")
    }

    /// The limiter's own refusal (the server was never asked) is not a failure of the server.
    @Test func review_theRateLimitersOwnRefusalsDoNotOpenTheBreaker() async throws {
        let limiter = RateLimiter(limits: RateLimits(requestsPerMinute: 1))
        let scripted = ScriptedModel([.response(.text("one")), .response(.text("two")), .response(.text("three"))])
        let model = CircuitBreakerModel(
            RateLimitedModel(scripted, limiter: limiter), name: "m", policy: .init(consecutiveFailures: 2))
        _ = try await model.complete(Self.request)
        for _ in 0..<3 {
            let refused = await error { try await ModelCallDeadline.within(.seconds(5)) { try await model.complete(Self.request) } }
            #expect(refused?.code == .rateLimited)
        }
        #expect(model.state == .closed)
    }

    /// A wait that would leave the request almost none of its deadline is refused at once.
    @Test func review_aWaitThatLeavesTooLittleOfTheDeadlineFailsFast() async throws {
        let clock = TestClock()
        let limiter = RateLimiter(limits: RateLimits(requestsPerMinute: 1), clock: clock)
        try await limiter.acquire(tokens: 1)
        // The next request waits 60 s; the call has 61 s left: not enough for the request too.
        let refused = await #expect(throws: TroupeError.self) { try await limiter.acquire(tokens: 1, deadline: 61) }
        #expect(refused?.details["source"] == RateLimiter.source)
    }

    /// Poolside sends the name with one id, then every argument delta with another, all at
    /// index 0: one call, not two.
    @Test func review_aCallWhoseIdChangesMidStreamStaysOneCall() {
        var assembler = ToolCallAssembler()
        assembler.add(index: 0, id: "A", name: "get_weather", arguments: "")
        assembler.add(index: 0, id: "B", name: nil, arguments: #"{"city":"#)
        assembler.add(index: 0, id: "B", name: nil, arguments: #""Paris"}"#)
        let calls = assembler.toolCalls()
        #expect(calls.count == 1)
        #expect(calls.first?.id == "A")
        #expect(calls.first?.arguments == #"{"city":"Paris"}"#)
        // Parallel calls at one index still come apart: the second names its function.
        var parallel = ToolCallAssembler()
        parallel.add(index: 0, id: "A", name: "get_weather", arguments: #"{"city":"Paris"}"#)
        parallel.add(index: 0, id: "B", name: "get_time", arguments: #"{"tz":"UTC"}"#)
        #expect(parallel.toolCalls().map(\.name) == ["get_weather", "get_time"])
    }

    /// TGI sends `{"error": "…", "error_type": "…"}`: a string, not OpenAI's object.
    @Test(arguments: [
        ("overloaded", TroupeError.Code.modelAPI, true), ("validation", .invalidInput, false), ("generation", .modelAPI, true),
    ])
    func review_aStringErrorWithItsTypeIsTheErrorItNames(type: String, code: TroupeError.Code, retryable: Bool) async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.sse([#"{"error":"Request failed during generation: CUDA out of memory","error_type":"\#(type)"}"#]))
            let failure = await error { try await model(mock).collect(Self.request) }
            #expect(failure?.code == code)
            #expect(failure?.isRetryable == retryable)
            #expect(failure?.message.contains("CUDA out of memory") == true)
        }
    }

    @Test func review_absurdUsageAndMaxTokensDoNotCrash() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(
                    #"{"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":-5}}"#
                ))
            let response = try await model(mock).complete(Self.request)
            #expect(response.usage.inputTokens == 1_000_000_000)
            #expect(response.usage.outputTokens == 0)
            #expect((response.usage + Usage(inputTokens: .max)).inputTokens == .max)
        }
        var request = Self.request
        request.maxTokens = .max
        #expect(RateLimitedModel.estimatedTokens(request) == .max)
        #expect(throws: TroupeError.self) { try RunConfiguration(maxTokens: .max).validated() }
    }

    /// "Invalid schema for response_format" is our schema's fault: it surfaces, and structured
    /// output stays on.
    @Test func review_anInvalidSchemaIsNotTakenForAServerWithoutStructuredOutput() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(
                    #"{"error":{"message":"Invalid schema for response_format 'plan': In context=(), 'required' is required","type":"invalid_request_error","param":"response_format","code":null}}"#,
                    status: 400))
            let client = try model(mock)
            var request = Self.request
            request.responseFormat = .jsonSchema(name: "plan", schema: .object([.init("steps", .string())]), strict: true)
            let failure = await error { try await client.complete(request) }
            #expect(failure?.code == .invalidInput)
            _ = try? await client.complete(request)
            #expect(mock.requests.count == 2)
            #expect(mock.requests.last?["response_format"] != nil, "structured output is still asked for")
        }
    }

    @Test func review_aNegativeRemainingCountAndASpacedDoneAreTakenCalmly() async throws {
        let clock = TestClock()
        let limiter = RateLimiter(limits: RateLimits(), clock: clock)
        limiter.observe(RateLimitStatus(remainingRequests: -1, requestsResetSeconds: 30, remainingTokens: -5, tokensResetSeconds: 30))
        try await limiter.acquire(tokens: 10, deadline: 1)  // not held for the "reset"

        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.sse([
                    #"{"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}"#, " [DONE]",
                ]))
            let client = try model(mock)
            let answer = try await client.collect(Self.request)
            #expect(answer.message.content == "hi")
        }
    }

    // MARK: 6. refusal

    @Test func item6_aRefusalIsReadAndNamedNotRepaired() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(
                    #"{"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":null,"refusal":"I can't help with that."}}]}"#
                ))
            let error = await error { try await model(mock).complete(Self.request) }
            #expect(error?.code == .modelRefused)
            #expect(error?.message.contains("I can't help with that.") == true)
            let refusal = try #require(error)
            #expect(!RunStateMachine.isRetryable(refusal))
        }
    }

    @Test func item6_aStreamedRefusalIsReadToo() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.sse([
                    #"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"refusal":"I can't "}}]}"#,
                    #"{"choices":[{"index":0,"delta":{"refusal":"help with that."}}]}"#,
                    #"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
                    "[DONE]",
                ]))
            let error = await error { try await model(mock).collect(Self.request) }
            #expect(error?.code == .modelRefused)
            #expect(error?.message.contains("I can't help with that.") == true)
        }
    }

    /// A planner that refuses fails the run at once, with the model's words, instead of being
    /// asked to repair an "empty" answer until it gives up.
    @Test func item6_aRefusingPlannerFailsTheRunAtOnceWithItsWords() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(
                    #"{"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":null,"refusal":"I won't plan that."}}]}"#
                ))
            let driver = try makeDriver(store: InMemoryRunStore(), model: model(mock), tools: [])
            let final = try await driver.run(goal: "Something", configuration: RunConfiguration(model: "m"))
            #expect(final.status == .failed)
            #expect(final.error?.message.contains("I won't plan that.") == true)
            #expect(mock.requestCount == 1)
        }
    }

    // MARK: 7. Errors inside a 200

    @Test(arguments: [
        (#"{"error":{"message":"Rate limit reached","code":429}}"#, TroupeError.Code.rateLimited),
        (#"{"error":{"message":"too long","code":"context_length_exceeded","type":"invalid_request_error"}}"#, .invalidInput),
        (#"{"error":{"message":"upstream failed","code":502}}"#, .modelAPI),
    ])
    func item7_anErrorInsideA200IsTheErrorItNames(body: String, code: TroupeError.Code) async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(Self.json(body))
            let error = await error { try await model(mock).complete(Self.request) }
            #expect(error?.code == code, "\(error?.message ?? "")")
            #expect(error?.message.contains("no choices") == false)
        }
    }

    /// A streamed request answered with one JSON document: its error (or its completion) is read.
    @Test func item7_aStreamedRequestAnsweredWithPlainJSONIsRead() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.json(#"{"error":{"message":"This model does not exist","code":"model_not_found","type":"invalid_request_error"}}"#))
            let error = await error { try await model(mock).collect(Self.request) }
            #expect(error?.code == .invalidInput)
            #expect(error?.message.contains("This model does not exist") == true)

            mock.enqueue(
                Self.json(
                    #"{"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"Hello."}}]}"#
                ))
            let answer = try await model(mock).collect(Self.request)
            #expect(answer.message.content == "Hello.")
        }
    }

    /// An error chunk inside a stream that says the request is at fault is not retried.
    @Test func item7_anErrorChunkSayingTheRequestIsWrongIsNotRetryable() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.sse([
                    #"{"error":{"message":"maximum context length exceeded","code":"context_length_exceeded","type":"invalid_request_error"}}"#
                ])
            )
            let error = await error { try await model(mock).collect(Self.request) }
            #expect(error?.code == .invalidInput)
            #expect(error?.isRetryable == false)
        }
    }
}
