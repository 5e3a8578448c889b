import Foundation
import Testing
import Troupe
import TroupeTesting

@Suite struct SSEParserTests {
    /// Feeds `text` to a parser split into pieces at every given offset.
    func parse(_ text: String, splitEvery size: Int) -> [SSEEvent] {
        var parser = SSEParser()
        let bytes = Array(text.utf8)
        var events: [SSEEvent] = []
        var index = 0
        while index < bytes.count {
            events += parser.feed(bytes[index..<min(bytes.count, index + size)])
            index += size
        }
        return events + parser.finish()
    }

    static let stream =
        ": keep-alive comment\r\n"
        + "data: {\"a\":1}\r\n\r\n"
        + "event: note\n"
        + "data: line one\n"
        + "data: line two\n\n"
        + "data:no-space\r\r"
        + "id: 7\n"
        + "data: [DONE]\n\n"

    @Test(arguments: [1, 2, 3, 5, 7, 64, 10_000])
    func handlesLineEndingsCommentsMultilineAndSplitsAnywhere(chunkSize: Int) {
        let events = parse(Self.stream, splitEvery: chunkSize)
        #expect(
            events == [
                SSEEvent(data: #"{"a":1}"#),
                SSEEvent(event: "note", data: "line one\nline two"),
                SSEEvent(data: "no-space"),
                SSEEvent(data: "[DONE]", id: "7"),
            ]
        )
    }

    @Test func crlfSplitBetweenChunksIsOneLineEnd() {
        var parser = SSEParser()
        var events = parser.feed(Array("data: x\r".utf8))
        events += parser.feed(Array("\n\r".utf8))
        events += parser.feed(Array("\ndata: y\n\n".utf8))
        #expect(events.map(\.data) == ["x", "y"])
    }

    @Test func lastEventWithoutBlankLineIsDeliveredAtFinish() {
        var parser = SSEParser()
        #expect(parser.feed(Array("data: tail".utf8)).isEmpty)
        #expect(parser.finish().map(\.data) == ["tail"])
    }

    @Test func blankLinesWithoutDataDispatchNothing() {
        #expect(parse("\n\n: only a comment\n\nevent: x\n\n", splitEvery: 3).isEmpty)
    }
}

@Suite struct ToolCallAssemblerTests {
    @Test func assemblesByIndexEvenWhenInterleaved() {
        var assembler = ToolCallAssembler()
        assembler.add(index: 0, id: "a", name: "fs_read", arguments: "")
        assembler.add(index: 1, id: "b", name: "fs_list", arguments: "{\"pa")
        assembler.add(index: 0, id: nil, name: nil, arguments: "{\"path\":")
        assembler.add(index: 1, id: nil, name: nil, arguments: "th\":\".\"}")
        assembler.add(index: 0, id: nil, name: nil, arguments: "\"x\"}")
        #expect(
            assembler.toolCalls() == [
                ToolCall(id: "a", name: "fs_read", arguments: #"{"path":"x"}"#),
                ToolCall(id: "b", name: "fs_list", arguments: #"{"path":"."}"#),
            ]
        )
    }

    @Test func withoutIndexANewIdStartsANewCall() {
        var assembler = ToolCallAssembler()
        assembler.add(index: nil, id: "a", name: "one", arguments: "{")
        assembler.add(index: nil, id: nil, name: nil, arguments: "}")
        assembler.add(index: nil, id: "b", name: "two", arguments: "{}")
        assembler.add(index: nil, id: "b", name: nil, arguments: "")
        #expect(
            assembler.toolCalls() == [ToolCall(id: "a", name: "one", arguments: "{}"), ToolCall(id: "b", name: "two", arguments: "{}")])
    }

    @Test func repeatedNamesAreNotDoubledAndMissingIdsAreGenerated() {
        var assembler = ToolCallAssembler()
        assembler.add(index: 3, id: nil, name: "echo", arguments: "{}")
        assembler.add(index: 3, id: nil, name: "echo", arguments: nil)
        #expect(assembler.toolCalls() == [ToolCall(id: "call_3", name: "echo", arguments: "{}")])
    }
}

@Suite struct OpenAIStreamingTests {
    static func sse(_ chunks: [String]) -> MockOpenAIServer.Reply {
        .http(status: 200, headers: ["content-type": "text/event-stream"], body: chunks.map { "data: \($0)\r\n\r\n" }.joined())
    }

    @Test func streamAssemblesTextToolCallsAndUsage() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.sse([
                    #"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
                    #"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
                    #"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c1","function":{"name":"echo","arguments":"{\"te"}}]}}]}"#,
                    #"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"xt\":\"hi\"}"}}]}}]}"#,
                    #"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
                    #"{"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":2}}}"#,
                    "[DONE]",
                ])
            )
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            var deltas: [ChatStreamEvent] = []
            let response = try await model.collect(ChatRequest(messages: [.user("hi")])) { deltas.append($0) }
            #expect(response.message.content == "Hello")
            #expect(response.message.toolCalls == [ToolCall(id: "c1", name: "echo", arguments: #"{"text":"hi"}"#)])
            #expect(response.finishReason == .toolCalls)
            #expect(response.usage == Usage(inputTokens: 11, outputTokens: 4, cachedTokens: 2))
            #expect(deltas.first == .textDelta("Hel"))
            let body = try #require(mock.requests.first)
            #expect(body["stream"] == true)
            #expect(body["stream_options"]?["include_usage"] == true)
        }
    }

    @Test func errorObjectMidStreamBecomesAnAPIError() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                Self.sse([
                    #"{"choices":[{"index":0,"delta":{"content":"par"}}]}"#,
                    #"{"error":{"message":"overloaded","type":"server_error"}}"#,
                ])
            )
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            let error = await #expect(throws: TroupeError.self) { _ = try await model.collect(ChatRequest(messages: [.user("hi")])) }
            #expect(error?.code == .modelAPI)
            #expect(error?.message.contains("overloaded") == true)
        }
    }

    /// Answers whose fields have the wrong types are refused with the field's path, streamed or not.
    @Test(arguments: [
        (#"{"choices":[{"message":{"role":"assistant","content":5}}]}"#, "field 'choices[0].message.content' is not a string", false),
        (#"{"choices":{"message":{}}}"#, "field 'choices' is not an array", false),
        (
            #"{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":"many"}}"#,
            "field 'usage.prompt_tokens' is not an integer", false
        ),
        (#"[1, 2]"#, "the value is not an object", false),
        (
            #"{"choices":[{"delta":{"tool_calls":[{"index":"zero"}]}}]}"#, "field 'choices[0].delta.tool_calls[0].index' is not an integer",
            true
        ),
        (#"{"choices":[{"delta":"text"}]}"#, "field 'choices[0].delta' is not an object", true),
    ])
    func answersWithMistypedFieldsNameTheField(body: String, reason: String, stream: Bool) async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(stream ? Self.sse([body, "[DONE]"]) : .http(status: 200, body: body))
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            let request = ChatRequest(messages: [.user("hi")])
            let error = await #expect(throws: TroupeError.self) {
                _ = stream ? try await model.collect(request) : try await model.complete(request)
            }
            #expect(error?.code == .malformedModelResponse)
            #expect(error?.message.contains(reason) == true, "\(error?.message ?? "")")
        }
    }

    @Test func errorBodiesWithNumericCodesKeepTheCode() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(.http(status: 429, body: #"{"error":{"message":"slow down","type":"rate_limit","code":1302}}"#))
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            let error = await #expect(throws: TroupeError.self) { _ = try await model.complete(ChatRequest(messages: [.user("hi")])) }
            #expect(error?.code == .rateLimited)
            #expect(error?.details["code"] == "1302")
            #expect(error?.message.contains("slow down") == true)
        }
    }

    @Test func streamCutBeforeTheEndIsATransportError() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(Self.sse([#"{"choices":[{"index":0,"delta":{"content":"par"}}]}"#]))
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            let error = await #expect(throws: TroupeError.self) { _ = try await model.collect(ChatRequest(messages: [.user("hi")])) }
            #expect(error?.code == .transport)
        }
    }

    @Test func requestCarriesToolsAndStrictResponseFormat() async throws {
        try await MockOpenAIServer.withServer { mock in
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, apiKey: "sk-test", model: "m"))
            let request = ChatRequest(
                messages: [.system("s"), .user("u")],
                tools: [CountingTool().spec],
                responseFormat: .jsonSchema(name: "troupe_plan", schema: Plan.schema.strictForOpenAI(), strict: true),
                temperature: 0.2,
                maxTokens: 100
            )
            _ = try await model.complete(request)
            let body = try #require(mock.requests.first)
            #expect(body["model"] == "m")
            #expect(body["tools"]?.arrayValue?.first?["function"]?["name"] == "echo")
            #expect(body["response_format"]?["type"] == "json_schema")
            #expect(body["response_format"]?["json_schema"]?["strict"] == true)
            #expect(body["response_format"]?["json_schema"]?["schema"]?["additionalProperties"] == false)
            #expect(body["max_tokens"] == 100)
            #expect(body["temperature"] == 0.2)
        }
    }

    @Test func mockRecordsRequestsAndLetsTestsWaitForThem() async throws {
        try await MockOpenAIServer.withServer(configuration: .init(latency: .milliseconds(50))) { mock in
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            let call = Task { try await model.complete(ChatRequest(messages: [.user("ping")])) }
            await mock.waitForRequests(1)
            #expect(mock.requests.first?["messages"]?.arrayValue?.first?["content"] == "ping")
            let response = try await call.value
            #expect(response.message.content == "Here is my answer, based on what I have.")
        }
    }

    @Test(arguments: [0, 2])
    func aLongRunningMockKeepsOnlyTheNewestRequests(kept: Int) async throws {
        try await MockOpenAIServer.withServer(configuration: .init(requestsKept: kept)) { mock in
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            for index in 1...5 { _ = try await model.complete(ChatRequest(messages: [.user("request \(index)")])) }
            await mock.waitForRequests(5)
            #expect(mock.requestCount == 5)
            let contents = mock.requests.map { $0["messages"]?.arrayValue?.first?["content"]?.stringValue ?? "" }
            if kept == 0 {
                #expect(contents.isEmpty)
            } else {
                #expect((kept..<2 * kept).contains(contents.count))
                #expect(contents.last == "request 5")
            }
        }
    }

    /// A server without structured output refuses `response_format`: the schema moves into the
    /// prompt, at once and for every later request to that endpoint.
    @Test(arguments: [false, true])
    func aServerWithoutResponseFormatGetsTheSchemaInThePrompt(stream: Bool) async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(
                .http(
                    status: 400,
                    body: #"{"error":{"message":"response_format of type json_schema is not supported","type":"invalid_request_error"}}"#
                ))
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            let request = ChatRequest(
                messages: [.system("plan"), .user("goal")],
                responseFormat: .jsonSchema(name: "troupe_plan", schema: Plan.schema.strictForOpenAI(), strict: true))
            _ = stream ? try await model.collect(request) : try await model.complete(request)
            _ = stream ? try await model.collect(request) : try await model.complete(request)
            let bodies = mock.requests
            #expect(bodies.count == 3)
            #expect(bodies[0]["response_format"] != nil)
            for body in bodies.dropFirst() {
                #expect(body["response_format"] == nil)
                // In the first (system) message: strict chat templates take a system message only there.
                let first = body["messages"]?.arrayValue?.first
                #expect(first?["role"] == "system")
                #expect(first?["content"]?.stringValue?.hasPrefix("plan") == true)
                #expect(first?["content"]?.stringValue?.contains("must match this JSON Schema (troupe_plan)") == true)
                #expect(body["messages"]?.arrayValue?.count == 2)
            }
        }
    }

    @Test func otherBadRequestsAreNotResentWithoutTheFormat() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(.http(status: 400, body: #"{"error":{"message":"max_tokens is too large","type":"invalid_request_error"}}"#))
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            let request = ChatRequest(
                messages: [.user("goal")], responseFormat: .jsonSchema(name: "troupe_plan", schema: Plan.schema, strict: true))
            let error = await #expect(throws: TroupeError.self) { try await model.complete(request) }
            #expect(error?.code == .invalidInput)
            #expect(mock.requestCount == 1)
        }
    }
}
