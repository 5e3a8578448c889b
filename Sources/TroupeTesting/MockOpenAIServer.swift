import Foundation
public import NIOCore
import NIOHTTP1
public import NIOPosix
import Synchronization
public import TroupeCore

/// A deterministic, in-process HTTP server on 127.0.0.1 that speaks the OpenAI Chat Completions
/// wire format, streaming and not. For tests, the demo and benchmarks: no network, no model.
///
/// Its default behaviour plays a plan-and-execute run:
/// - a **planner** request (`response_format` named `troupe_plan`) gets a plan of
///   ``Configuration/planSteps`` steps, each depending on the previous one and using one tool;
/// - an **executor** request that offers tools gets a call to the first offered tool, with
///   arguments from ``Configuration/arguments`` or made up from the tool's schema;
/// - after a tool result, the answer is a short text that quotes it.
///
/// Scripted ``Reply``s queued with ``enqueue(_:)`` are served first, in order: use them for
/// malformed answers, HTTP errors and dropped connections.
public final class MockOpenAIServer: Sendable {
    /// How the mock answers.
    public struct Configuration: Sendable {
        /// Steps in the plans it proposes.
        public var planSteps: Int
        /// Wait this long before answering each request.
        public var latency: Duration
        /// Tools for the plan's steps, cycled; `nil` reads them from the planner's prompt.
        public var planTools: [String]?
        /// Arguments for a tool call, given the tool's name and JSON Schema; `nil` makes them up.
        public var arguments: @Sendable (_ tool: String, _ schema: JSONValue) -> JSONValue?
        /// How many of the newest requests ``MockOpenAIServer/requests`` keeps at least (it keeps
        /// fewer than twice as many: a long-running mock, as in benchmarks, must not grow without
        /// end); ``MockOpenAIServer/requestCount`` counts them all.
        public var requestsKept: Int

        public init(
            planSteps: Int = 3,
            latency: Duration = .zero,
            planTools: [String]? = nil,
            requestsKept: Int = .max,
            arguments: @escaping @Sendable (_ tool: String, _ schema: JSONValue) -> JSONValue? = { _, _ in nil }
        ) {
            self.planSteps = planSteps
            self.latency = latency
            self.planTools = planTools
            self.requestsKept = max(0, requestsKept)
            self.arguments = arguments
        }
    }

    /// A scripted answer, served instead of the default behaviour.
    public enum Reply: Sendable {
        /// Any HTTP answer; for an SSE body set `content-type: text/event-stream`.
        case http(status: Int, headers: [String: String] = ["content-type": "application/json"], body: String)
        /// Close the connection without answering.
        case dropConnection
        /// Start an SSE answer, send these chunks as `data:` events, then close the connection
        /// mid-stream (no `[DONE]`, no end of the chunked body): a connection lost while streaming.
        case cutStream([String])
        /// Answer a planner request with exactly this text as the message content.
        case content(String, finishReason: String = "stop")
        /// Read the request and never answer (until the client gives up or the server shuts down).
        case hang
        /// Start an SSE answer, send these chunks as `data:` events, then go silent with the
        /// connection open: a server that stalls mid-answer.
        case stall([String])
        /// The default answer, slowly: this pause before the head and, when streaming, before
        /// each event.
        case slow(Duration)
        /// The default answer with these extra headers (e.g. `x-ratelimit-remaining-requests`).
        case headers([String: String])
    }

    private struct State {
        var requests: [JSONValue] = []
        var requestCount = 0
        var scripted: [Reply] = []
        var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    public let configuration: Configuration
    /// The TCP port it listens on (chosen by the system).
    public let port: Int
    private let state = Mutex(State())
    private let channel: any Channel
    private let serving: Mutex<Task<Void, Never>?> = Mutex(nil)

    /// `http://127.0.0.1:PORT/v1`, ready for `OPENAI_BASE_URL`.
    public var baseURL: String { "http://127.0.0.1:\(port)/v1" }

    private init(configuration: Configuration, channel: any Channel, port: Int) {
        self.configuration = configuration
        self.channel = channel
        self.port = port
    }

    /// Starts a server on 127.0.0.1, on an ephemeral port unless `port` names one.
    public static func start(
        configuration: Configuration = Configuration(),
        port: Int = 0,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> MockOpenAIServer {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
        let mock = MockOpenAIServer(configuration: configuration, channel: server.channel, port: server.channel.localAddress?.port ?? 0)
        let task = Task<Void, Never> {
            try? await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await mock.serve(connection) }
                    }
                }
            }
        }
        mock.serving.withLock { $0 = task }
        return mock
    }

    /// Runs `body` with a started server and shuts it down afterwards, even on error.
    public static func withServer<T: Sendable>(
        configuration: Configuration = Configuration(),
        _ body: (MockOpenAIServer) async throws -> T
    ) async throws -> T {
        let server = try await start(configuration: configuration)
        do {
            let result = try await body(server)
            await server.shutdown()
            return result
        } catch {
            await server.shutdown()
            throw error
        }
    }

    /// Stops listening and closes open connections.
    public func shutdown() async {
        try? await channel.close()
        let task = serving.withLock { $0 }
        task?.cancel()
        await task?.value
    }

    /// Queues scripted replies, served before the default behaviour.
    public func enqueue(_ replies: Reply...) {
        state.withLock { $0.scripted += replies }
    }

    /// The JSON bodies of the chat requests received so far (the newest ones, see `requestsKept`).
    public var requests: [JSONValue] { state.withLock { $0.requests } }

    /// How many chat requests have arrived.
    public var requestCount: Int { state.withLock { $0.requestCount } }

    /// Returns once at least `count` chat requests have arrived (their answers may still be pending).
    public func waitForRequests(_ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state in
                if state.requestCount >= count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    // MARK: - Serving

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        try? await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            var body = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let requestHead):
                    head = requestHead
                    body.clear()
                case .body(var chunk):
                    guard body.readableBytes + chunk.readableBytes <= Self.maxRequestBytes else {
                        // Answered at once, and the connection closed: the rest is not read.
                        try await write(
                            outbound, status: 413, headers: ["content-type": "application/json", "connection": "close"],
                            body: Self.errorBody("The request body is over \(Self.maxRequestBytes >> 20) MiB."))
                        return
                    }
                    body.writeBuffer(&chunk)
                case .end:
                    guard let requestHead = head else { continue }
                    let keepGoing = try await respond(to: requestHead, body: body, outbound: outbound)
                    if !keepGoing { return }
                }
            }
        }
    }

    /// Answers one request; returns `false` when the connection must close.
    private func respond(
        to head: HTTPRequestHead,
        body: ByteBuffer,
        outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws -> Bool {
        guard head.method == .POST, head.uri.hasSuffix("/chat/completions") else {
            try await write(
                outbound, status: 404, headers: ["content-type": "application/json"], body: Self.errorBody("Not found: \(head.uri)"))
            return true
        }
        let request = (try? JSONValue.parse(Data(body.readableBytesView))) ?? .null
        let scripted = state.withLock { state -> Reply? in
            state.requestCount += 1
            if configuration.requestsKept > 0 {
                state.requests.append(request)
                // Trimmed in bulk so that keeping the newest requests stays cheap per request.
                if state.requests.count - configuration.requestsKept >= configuration.requestsKept {
                    state.requests.removeFirst(configuration.requestsKept)
                }
            }
            let count = state.requestCount
            let ready = state.waiters.filter { $0.count <= count }
            state.waiters.removeAll { $0.count <= count }
            for waiter in ready { waiter.continuation.resume() }
            return state.scripted.isEmpty ? nil : state.scripted.removeFirst()
        }
        if configuration.latency > .zero {
            try await Task.sleep(for: configuration.latency)
        }
        let stream = request["stream"]?.boolValue ?? false
        switch scripted {
        case .http(let status, let headers, let text)?:
            try await write(outbound, status: status, headers: headers, body: text)
            return true
        case .dropConnection?:
            return false
        case .cutStream(let chunks)?:
            try await startStream(chunks, outbound: outbound)
            return false
        case .content(let text, let finishReason)?:
            try await answer(
                Answer(content: text, toolCall: nil, finishReason: finishReason), request: request, stream: stream, outbound: outbound)
            return true
        case .hang?:
            try await Task.sleep(for: .seconds(3_600))
            return false
        case .stall(let chunks)?:
            try await startStream(chunks, outbound: outbound)
            try await Task.sleep(for: .seconds(3_600))
            return false
        case .slow(let pause)?:
            try await answer(defaultAnswer(to: request), request: request, stream: stream, outbound: outbound, pause: pause)
            return true
        case .headers(let extra)?:
            try await answer(defaultAnswer(to: request), request: request, stream: stream, outbound: outbound, headers: extra)
            return true
        case nil:
            try await answer(defaultAnswer(to: request), request: request, stream: stream, outbound: outbound)
            return true
        }
    }

    /// An SSE answer's head and these chunks as `data:` events, without an end.
    private func startStream(_ chunks: [String], outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream")
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        for chunk in chunks { try await outbound.write(.body(.byteBuffer(ByteBuffer(string: "data: \(chunk)\n\n")))) }
    }

    private struct Answer {
        var content: String?
        var toolCall: (name: String, arguments: String)?
        var finishReason: String
    }

    private func defaultAnswer(to request: JSONValue) -> Answer {
        let messages = request["messages"]?.arrayValue ?? []
        let system = messages.first?["content"]?.stringValue ?? ""
        let format = request["response_format"]?["json_schema"]?["name"]?.stringValue
        if format == "troupe_plan" || system.contains("You are the planner") {
            return Answer(content: planJSON(systemPrompt: system), toolCall: nil, finishReason: "stop")
        }
        let tools = request["tools"]?.arrayValue ?? []
        let last = messages.last
        if last?["role"]?.stringValue == "tool" {
            let result = last?["content"]?.stringValue ?? ""
            return Answer(content: "Done. The tool returned: \(result.prefix(200))", toolCall: nil, finishReason: "stop")
        }
        if let function = tools.first?["function"], let name = function["name"]?.stringValue {
            let schema = function["parameters"] ?? .object([:])
            let arguments = configuration.arguments(name, schema) ?? Self.exampleArguments(for: schema)
            return Answer(content: nil, toolCall: (name, arguments.jsonString), finishReason: "tool_calls")
        }
        return Answer(content: "Here is my answer, based on what I have.", toolCall: nil, finishReason: "stop")
    }

    private func planJSON(systemPrompt: String) -> String {
        let tools = configuration.planTools ?? Self.toolNames(inPlannerPrompt: systemPrompt)
        let steps: [JSONValue] = (1...max(1, configuration.planSteps)).map { index in
            .object([
                "id": .string("s\(index)"),
                "title": .string("Step \(index)"),
                "instruction": .string("Carry out part \(index) of the goal."),
                "tools": .array(tools.isEmpty ? [] : [.string(tools[(index - 1) % tools.count])]),
                "dependsOn": .array(index == 1 ? [] : [.string("s\(index - 1)")]),
            ])
        }
        return JSONValue.object(["steps": .array(steps)]).jsonString
    }

    /// Tool names from the planner's prompt, whose tool list has lines `- name: description`.
    static func toolNames(inPlannerPrompt prompt: String) -> [String] {
        guard let range = prompt.range(of: "Tools:\n") else { return [] }
        var names: [String] = []
        for line in prompt[range.upperBound...].split(separator: "\n", omittingEmptySubsequences: false) {
            guard line.hasPrefix("- "), let colon = line.firstIndex(of: ":") else { break }
            names.append(String(line[line.index(line.startIndex, offsetBy: 2)..<colon]))
        }
        return names
    }

    /// Arguments that satisfy a tool's schema: every required property with a plausible value.
    static func exampleArguments(for schema: JSONValue) -> JSONValue {
        let properties = schema["properties"]?.objectValue ?? [:]
        let required = schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? properties.keys.sorted()
        var arguments: [String: JSONValue] = [:]
        for name in required {
            arguments[name] = exampleValue(named: name, schema: properties[name] ?? .object([:]))
        }
        return .object(arguments)
    }

    private static func exampleValue(named name: String, schema: JSONValue) -> JSONValue {
        if let first = schema["enum"]?.arrayValue?.first { return first }
        let type = schema["type"]?.stringValue ?? schema["type"]?.arrayValue?.first?.stringValue ?? "string"
        switch type {
        case "integer":
            // A schema's bound may be any number (1e300): only one an Int holds is used.
            guard let minimum = schema["minimum"]?.doubleValue, minimum.isFinite, abs(minimum) < 9e15 else { return .int(1) }
            return .int(Int(minimum.rounded(.up)))
        case "number": return .double(schema["minimum"]?.doubleValue ?? 1)
        case "boolean": return .bool(false)
        case "array": return .array([])
        case "object": return exampleArguments(for: schema)
        default: return .string(name == "path" ? "." : "example \(name)")
        }
    }

    // MARK: - Writing answers

    private func answer(
        _ answer: Answer,
        request: JSONValue,
        stream: Bool,
        outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
        pause: Duration = .zero,
        headers extraHeaders: [String: String] = [:]
    ) async throws {
        if pause > .zero { try await Task.sleep(for: pause) }
        let number = requestCount
        let model = request["model"]?.stringValue ?? "mock"
        let promptTokens = max(1, (request.jsonString.utf8.count) / 4)
        let completionTokens = max(1, ((answer.content ?? "").utf8.count + (answer.toolCall?.arguments.utf8.count ?? 0)) / 4)
        let usage: JSONValue = [
            "prompt_tokens": .int(promptTokens), "completion_tokens": .int(completionTokens),
            "total_tokens": .int(promptTokens + completionTokens),
        ]
        let id = "chatcmpl-mock-\(number)"
        let toolCalls: JSONValue? = answer.toolCall.map { call in
            [
                [
                    "id": .string("call_\(number)"), "type": "function",
                    "function": ["name": .string(call.name), "arguments": .string(call.arguments)],
                ]
            ]
        }
        guard stream else {
            var message: [String: JSONValue] = ["role": "assistant", "content": answer.content.map(JSONValue.string) ?? .null]
            if let toolCalls { message["tool_calls"] = toolCalls }
            let body: JSONValue = [
                "id": .string(id), "object": "chat.completion", "created": 0, "model": .string(model),
                "choices": [["index": 0, "message": .object(message), "finish_reason": .string(answer.finishReason)]],
                "usage": usage,
            ]
            try await write(
                outbound, status: 200, headers: extraHeaders.merging(["content-type": "application/json"]) { $1 }, body: body.jsonString)
            return
        }
        func chunk(_ delta: JSONValue, finish: String? = nil) -> String {
            let value: JSONValue = [
                "id": .string(id), "object": "chat.completion.chunk", "created": 0, "model": .string(model),
                "choices": [["index": 0, "delta": delta, "finish_reason": finish.map(JSONValue.string) ?? .null]],
            ]
            return "data: \(value.jsonString)\n\n"
        }
        var events: [String] = [chunk(["role": "assistant", "content": ""])]
        if let content = answer.content {
            var rest = Substring(content)
            while !rest.isEmpty {
                events.append(chunk(["content": .string(String(rest.prefix(24)))]))
                rest = rest.dropFirst(24)
            }
        }
        if let call = answer.toolCall {
            events.append(
                chunk([
                    "tool_calls": [
                        [
                            "index": 0, "id": .string("call_\(number)"), "type": "function",
                            "function": ["name": .string(call.name), "arguments": ""],
                        ]
                    ]
                ])
            )
            let middle = call.arguments.index(call.arguments.startIndex, offsetBy: call.arguments.count / 2)
            for piece in [call.arguments[..<middle], call.arguments[middle...]] where !piece.isEmpty {
                events.append(chunk(["tool_calls": [["index": 0, "function": ["arguments": .string(String(piece))]]]]))
            }
        }
        events.append(chunk([:], finish: answer.finishReason))
        let usageChunk: JSONValue = [
            "id": .string(id), "object": "chat.completion.chunk", "created": 0, "model": .string(model), "choices": [], "usage": usage,
        ]
        events.append("data: \(usageChunk.jsonString)\n\n")
        events.append("data: [DONE]\n\n")

        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream")
        headers.add(name: "cache-control", value: "no-cache")
        for (name, value) in extraHeaders.sorted(by: { $0.key < $1.key }) { headers.add(name: name, value: value) }
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        for event in events {
            if pause > .zero { try await Task.sleep(for: pause) }
            try await outbound.write(.body(.byteBuffer(ByteBuffer(string: event))))
        }
        try await outbound.write(.end(nil))
    }

    private func write(
        _ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>,
        status: Int,
        headers: [String: String],
        body: String
    ) async throws {
        var httpHeaders = HTTPHeaders()
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { httpHeaders.add(name: name, value: value) }
        let buffer = ByteBuffer(string: body)
        if !headers.keys.contains(where: { $0.lowercased() == "content-type" && headers[$0]?.contains("event-stream") == true }) {
            httpHeaders.replaceOrAdd(name: "content-length", value: "\(buffer.readableBytes)")
        }
        try await outbound.write(
            .head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: httpHeaders)))
        try await outbound.write(.body(.byteBuffer(buffer)))
        try await outbound.write(.end(nil))
    }

    /// The largest request body read (a long conversation is a few MiB).
    public static let maxRequestBytes = 32 << 20

    static func errorBody(_ message: String, type: String = "invalid_request_error") -> String {
        JSONValue.object(["error": ["message": .string(message), "type": .string(type), "code": .null]]).jsonString
    }
}
