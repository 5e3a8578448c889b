public import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Synchronization
public import TroupeCore

/// A ``ChatModel`` that speaks the OpenAI Chat Completions API over HTTP: OpenAI itself, or any
/// compatible server (vLLM, Ollama, llama.cpp, LiteLLM, …) at ``Configuration/baseURL``.
///
/// Non-streaming and streaming (SSE) answers, tools, structured output and usage; the provider's
/// error bodies become ``TroupeError``s naming the endpoint and the HTTP status. The API key is
/// sent only in the `Authorization` header and never logged or journaled.
public struct OpenAIChatModel: ChatModel {
    /// Where the API is and how to call it. Never journaled: it holds the API key.
    public struct Configuration: Sendable {
        /// The API root, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
        public var baseURL: String
        public var apiKey: String?
        /// The model name sent with every request.
        public var model: String
        /// Extra headers (e.g. `OpenAI-Organization`), sent as given.
        public var headers: [String: String]
        /// The time limits of a call: connecting, the first byte, silences mid-answer, the whole.
        public var timeouts: ModelTimeouts
        /// The largest answer accepted, in bytes.
        public var maxResponseBytes: Int

        public init(
            baseURL: String = "https://api.openai.com/v1",
            apiKey: String? = nil,
            model: String,
            headers: [String: String] = [:],
            timeouts: ModelTimeouts = ModelTimeouts(),
            maxResponseBytes: Int = 16 << 20
        ) {
            self.baseURL = baseURL
            self.apiKey = apiKey
            self.model = model
            self.headers = headers
            self.timeouts = timeouts
            self.maxResponseBytes = maxResponseBytes
        }

        /// Reads `OPENAI_BASE_URL` and `OPENAI_API_KEY` from the environment, with overrides.
        public static func fromEnvironment(
            model: String,
            baseURL: String? = nil,
            environment: [String: String] = ProcessInfo.processInfo.environment
        ) -> Configuration {
            Configuration(
                baseURL: baseURL ?? environment["OPENAI_BASE_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? "https://api.openai.com/v1",
                apiKey: environment["OPENAI_API_KEY"].flatMap { $0.isEmpty ? nil : $0 },
                model: model
            )
        }
    }

    public let configuration: Configuration
    private let client: HTTPClient
    private let endpoint: String

    /// How model calls want their HTTP client: connect within `timeouts.connectSeconds`, fail a
    /// connection attempt at once instead of retrying it until the request's deadline (retries are
    /// the resilience layer's decision), allow many concurrent connections per host, never follow
    /// redirects. Responses are not asked to be compressed: chat completions are a few kilobytes,
    /// and the decompression stage cost about 4% of the CPU of a model call even when nothing was
    /// compressed. The other limits are the model's own (``Configuration/timeouts``).
    public static func httpClientConfiguration(timeouts: ModelTimeouts = ModelTimeouts()) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = HTTPClient.Configuration.Timeout(
            connect: .nanoseconds(Int64(timeouts.connectSeconds * 1e9)), read: nil)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 1_024
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        return configuration
    }

    /// A process-wide client with ``httpClientConfiguration``, used when none is given. It lives as
    /// long as the process and needs no shutdown. Services that want an explicit lifecycle use
    /// ``withHTTPClient(_:)`` instead.
    public static let sharedHTTPClient = HTTPClient(
        eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: httpClientConfiguration())

    /// Runs `body` with a new client configured for model calls, and shuts it down afterwards —
    /// after `body` returns or throws — so no connection outlives the work.
    public static func withHTTPClient<T: Sendable>(
        timeouts: ModelTimeouts = ModelTimeouts(),
        _ body: (HTTPClient) async throws -> T
    ) async throws -> T {
        let client = HTTPClient(
            eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: httpClientConfiguration(timeouts: timeouts))
        do {
            let result = try await body(client)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    /// - Parameter httpClient: the client to use; defaults to ``sharedHTTPClient``.
    public init(configuration: Configuration, httpClient: HTTPClient = OpenAIChatModel.sharedHTTPClient) throws(TroupeError) {
        if let key = configuration.apiKey, let problem = SecretText.problem(in: key, source: "the API key of \(configuration.model)") {
            throw problem
        }
        var base = configuration.baseURL.trimmingCharacters(in: .whitespaces)
        while base.hasSuffix("/") { base.removeLast() }
        guard let url = URL(string: base), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https", url.host != nil
        else {
            throw TroupeError(
                .configuration,
                "The model base URL '\(configuration.baseURL)' is not an http(s) URL. Use e.g. https://api.openai.com/v1."
            )
        }
        _ = try configuration.timeouts.validated()
        self.configuration = configuration
        self.client = httpClient
        self.endpoint = base + "/chat/completions"
    }

    public func complete(_ request: ChatRequest) async throws -> ChatResponse {
        try await withTimeLimits { timer in
            try await wholeAnswer(of: try await send(request, stream: false, timer: timer), timer: timer)
        }
    }

    /// Reads a whole (not streamed) answer, within the size cap, as a chat completion.
    private func wholeAnswer(of response: HTTPClientResponse, timer: CallTimer) async throws -> ChatResponse {
        var body = ByteBuffer()
        do {
            for try await chunk in response.body {
                timer.received()
                guard body.readableBytes + chunk.readableBytes <= configuration.maxResponseBytes else {
                    throw TroupeError(
                        .malformedModelResponse,
                        "The answer from \(endpoint) exceeded \(configuration.maxResponseBytes) bytes.",
                        details: details())
                }
                body.writeImmutableBuffer(chunk)
            }
        } catch {
            throw transportError(error, "reading the answer")
        }
        var answer = try answer(in: body)
        answer.rateLimit = RateLimitStatus { response.headers.first(name: $0) }
        return answer
    }

    /// The chat completion in a non-streaming answer's body.
    private func answer(in body: ByteBuffer) throws(TroupeError) -> ChatResponse {
        let decoded: OpenAIWire.Response
        do {
            decoded = try OpenAIWire.Response(JSONParser.parse(body.readableBytesView))
        } catch {
            throw TroupeError(
                .malformedModelResponse,
                "The model at \(endpoint) answered with something that is not a chat completion: \(error.message).",
                details: details(["body": Self.preview(body)])
            )
        }
        if let error = decoded.error, decoded.choices?.first?.message == nil {
            throw apiError(status: nil, body: error, retryAfter: nil)
        }
        guard let choice = decoded.choices?.first, let message = choice.message else {
            throw TroupeError(
                .malformedModelResponse,
                "The model at \(endpoint) answered with no choices.",
                details: details(["body": Self.preview(body)])
            )
        }
        let toolCalls = (message.tool_calls ?? []).enumerated().map { offset, call in
            ToolCall(id: call.id ?? "call_\(offset)", name: call.function.name ?? "", arguments: call.function.arguments ?? "")
        }
        if let refusal = message.refusal, !refusal.isEmpty, (message.content ?? "").isEmpty, toolCalls.isEmpty {
            throw refused(refusal)
        }
        return ChatResponse(
            message: .assistant(message.content, toolCalls: toolCalls),
            finishReason: OpenAIWire.finishReason(choice.finish_reason),
            usage: decoded.usage?.usage ?? .zero,
            model: decoded.model ?? configuration.model
        )
    }

    public func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
        .producing { continuation in
            try await withTimeLimits { timer in
                try await streamAnswer(request, timer: timer) { continuation.yield($0) }
            }
        }
    }

    /// Runs one call under its time limits: the call and a ``CallTimer`` race, the first to end
    /// decides — the call's answer or error, or the timer's `timeout` (the call is then cancelled,
    /// which closes its connection).
    private func withTimeLimits<T: Sendable>(_ call: @escaping @Sendable (CallTimer) async throws -> T) async throws -> T {
        let timer = CallTimer(timeouts: configuration.timeouts, endpoint: endpoint, details: details())
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                do {
                    return try await call(timer)
                } catch {
                    // The HTTP client's own deadline is a backstop a second after the call's; on a
                    // starved machine it can still fire before the timer's task runs. Past the
                    // call's limit, the error names that limit, as the timer would have.
                    if let failure = error as? TroupeError, failure.code == .timeout, failure.details["timeout"] == nil,
                        let expired = timer.expiry(at: .now)
                    {
                        throw expired
                    }
                    throw error
                }
            }
            group.addTask { try await timer.expire() }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let result = first else {
                preconditionFailure("The call timer ended without an error.")
            }
            return result
        }
    }

    private func streamAnswer(_ request: ChatRequest, timer: CallTimer, yield: (ChatStreamEvent) -> Void) async throws {
        let response = try await send(request, stream: true, timer: timer)
        if let type = response.headers.first(name: "content-type")?.lowercased(), type.contains("json"), !type.contains("event-stream") {
            // A server that answers a streamed request with one JSON document (an error, or the
            // whole completion): read it as such rather than as a stream that never began.
            let answer = try await wholeAnswer(of: response, timer: timer)
            if let content = answer.message.content, !content.isEmpty { yield(.textDelta(content)) }
            yield(.completed(answer))
            return
        }
        var parser = SSEParser()
        var assembler = ToolCallAssembler()
        var text = ""
        var refusal = ""
        var finish: FinishReason?
        var usage = Usage.zero
        var model = configuration.model
        var received = 0
        var done = false

        func handle(_ event: SSEEvent) throws {
            if event.data.trimmingCharacters(in: .whitespaces) == "[DONE]" {
                done = true
                return
            }
            let chunk: OpenAIWire.Chunk
            do {
                chunk = try OpenAIWire.Chunk(JSONParser.parse(event.data.utf8))
            } catch {
                throw TroupeError(
                    .malformedModelResponse,
                    "The model at \(endpoint) sent a stream chunk that is not a chat completion chunk: \(error.message).",
                    details: details(["chunk": String(event.data.prefix(500))])
                )
            }
            if let error = chunk.error {
                throw apiError(status: nil, body: error, retryAfter: nil)
            }
            if let name = chunk.model, !name.isEmpty { model = name }
            if let chunkUsage = chunk.usage { usage = chunkUsage.usage }
            for choice in chunk.choices ?? [] {
                if let content = choice.delta?.content, !content.isEmpty {
                    text += content
                    yield(.textDelta(content))
                }
                if let words = choice.delta?.refusal { refusal += words }
                for delta in choice.delta?.tool_calls ?? [] {
                    let index = assembler.add(
                        index: delta.index,
                        id: delta.id,
                        name: delta.function?.name,
                        arguments: delta.function?.arguments
                    )
                    yield(
                        .toolCallDelta(
                            index: index, id: delta.id, name: delta.function?.name, argumentsDelta: delta.function?.arguments ?? ""))
                }
                if let reason = choice.finish_reason { finish = OpenAIWire.finishReason(reason) }
            }
        }

        do {
            for try await buffer in response.body {
                timer.received()
                received += buffer.readableBytes
                if received > configuration.maxResponseBytes {
                    throw TroupeError(
                        .malformedModelResponse, "The stream from \(endpoint) exceeded \(configuration.maxResponseBytes) bytes.",
                        details: details())
                }
                for event in parser.feed(buffer.readableBytesView) {
                    try handle(event)
                }
                if done { break }
            }
            for event in parser.finish() { try handle(event) }
        } catch let error as TroupeError {
            throw error
        } catch {
            throw transportError(error, "reading the stream")
        }
        guard done || finish != nil else {
            throw TroupeError(
                .transport,
                "The stream from \(endpoint) ended before the answer was complete (no finish reason, no [DONE]).",
                details: details(["received": "\(text.count) characters"])
            )
        }
        let calls = assembler.toolCalls()
        if !refusal.isEmpty, text.isEmpty, calls.isEmpty { throw refused(refusal) }
        yield(
            .completed(
                ChatResponse(
                    message: .assistant(text.isEmpty && !calls.isEmpty ? nil : text, toolCalls: calls),
                    finishReason: finish ?? (calls.isEmpty ? .stop : .toolCalls),
                    usage: usage,
                    model: model,
                    rateLimit: RateLimitStatus { response.headers.first(name: $0) }
                )
            )
        )
    }

    /// Sends the request; returns the response once its status is known to be a success.
    ///
    /// A server that refuses `response_format` (a 400 that names it) is asked again at once with
    /// the schema in the prompt instead, and is remembered: later requests to that endpoint carry
    /// the schema in the prompt from the start (the planner reads JSON from prose or fences too).
    ///
    /// A server that refuses `stream_options` (older Azure API versions, some gateways) is asked
    /// again at once without it, and is remembered the same way; its streams then carry no usage.
    private func send(_ request: ChatRequest, stream: Bool, timer: CallTimer) async throws -> HTTPClientResponse {
        // Remembered per endpoint and model: one model's refusal says nothing of another's.
        let formatKey = endpoint + " " + configuration.model
        let usesFormat = Self.jsonInPromptEndpoints.withLock { !$0.contains(formatKey) }
        let streamOptions = stream && Self.noStreamOptionsEndpoints.withLock { !$0.contains(endpoint) }
        let completionTokens =
            Self.usesCompletionTokens(configuration.model) || Self.completionTokensModels.withLock { $0.contains(formatKey) }
        let asked = usesFormat ? request : request.withSchemaInPrompt()
        do {
            return try await post(
                asked, stream: stream, streamOptions: streamOptions, completionTokens: completionTokens, timer: timer)
        } catch let error as TroupeError where usesFormat && request.asksForJSONSchema && error.refusesParameter("response_format") {
            Self.jsonInPromptEndpoints.withLock { _ = $0.insert(formatKey) }
            Logger(label: "troupe.model").notice(
                "The model API refused response_format; asking for JSON in the prompt from now on", metadata: ["endpoint": "\(endpoint)"])
            return try await send(request, stream: stream, timer: timer)
        } catch let error as TroupeError where !completionTokens && request.maxTokens != nil && error.asksForCompletionTokens {
            Self.completionTokensModels.withLock { _ = $0.insert(formatKey) }
            Logger(label: "troupe.model").notice(
                "The model API refused max_tokens; sending max_completion_tokens from now on",
                metadata: ["endpoint": "\(endpoint)", "model": "\(configuration.model)"])
            return try await send(request, stream: stream, timer: timer)
        } catch let error as TroupeError where streamOptions && error.refusesParameter("stream_options") {
            Self.noStreamOptionsEndpoints.withLock { _ = $0.insert(endpoint) }
            Logger(label: "troupe.model").notice(
                "The model API refused stream_options; streaming without it from now on", metadata: ["endpoint": "\(endpoint)"])
            return try await send(request, stream: stream, timer: timer)
        }
    }

    /// Endpoints that refused `stream_options`, for the life of the process.
    private static let noStreamOptionsEndpoints = Mutex<Set<String>>([])

    /// Endpoints and models (`URL model`) that refused `max_tokens`, for the life of the process.
    private static let completionTokensModels = Mutex<Set<String>>([])

    /// Models known to take only `max_completion_tokens`: OpenAI's reasoning models (o1, o3, o4…)
    /// and gpt-5.
    static func usesCompletionTokens(_ model: String) -> Bool {
        let name = model.lowercased().split(separator: "/").last.map(String.init) ?? model.lowercased()
        if name.hasPrefix("gpt-5") { return true }
        guard name.first == "o", let digit = name.dropFirst().first, digit.isNumber else { return false }
        return true
    }

    /// Endpoints and models (`URL model`) that refused `response_format`, for the life of the process.
    private static let jsonInPromptEndpoints = Mutex<Set<String>>([])

    /// Posts the request; the timer learns when the head of a successful answer arrived.
    private func post(
        _ request: ChatRequest, stream: Bool, streamOptions: Bool, completionTokens: Bool, timer: CallTimer
    ) async throws -> HTTPClientResponse {
        var http = HTTPClientRequest(url: endpoint)
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/json")
        http.headers.add(name: "Accept", value: stream ? "text/event-stream" : "application/json")
        if let key = configuration.apiKey { http.headers.add(name: "Authorization", value: "Bearer \(key)") }
        for (name, value) in configuration.headers { http.headers.replaceOrAdd(name: name, value: value) }
        http.body = .bytes(
            ByteBuffer(
                bytes: OpenAIWire.body(
                    for: request, model: configuration.model, stream: stream, streamOptions: streamOptions,
                    completionTokens: completionTokens)))
        let response: HTTPClientResponse
        do {
            // The timer cuts the call first; the client's own deadline is a backstop.
            let remaining = ContinuousClock.now.duration(to: timer.deadline).seconds
            response = try await client.execute(http, deadline: .now() + .nanoseconds(Int64(max(0, remaining + 1) * 1e9)))
        } catch {
            throw transportError(error, "sending the request")
        }
        guard (200..<300).contains(response.status.code) else {
            // An error body is read within the first-byte limit: the answer has not begun.
            let body = (try? await response.body.collect(upTo: 64 << 10)) ?? ByteBuffer()
            let fallback = OpenAIWire.ErrorBody(message: Self.preview(body), type: nil, code: nil, param: nil)
            throw apiError(
                status: Int(response.status.code),
                body: OpenAIWire.errorBody(in: body.readableBytesView) ?? fallback,
                retryAfter: response.headers.first(name: "retry-after-ms").map { "\($0)ms" } ?? response.headers.first(name: "retry-after")
            )
        }
        timer.received()
        return response
    }

    /// The model's refusal (OpenAI's `refusal` field), with its words.
    private func refused(_ words: String) -> TroupeError {
        TroupeError(
            .modelRefused,
            "The model at \(endpoint) declined to answer: \(words.clipped(to: 2_000))",
            details: details(["refusal": words.clipped(to: 2_000)]))
    }

    /// The error a server reported — by its HTTP status, or, for an error sent inside a success
    /// (a 200 body, a stream chunk), by the status its `code` names or the kind its `code` and
    /// `type` say (`context_length_exceeded` is the request's fault, not the server's).
    private func apiError(status: Int?, body: OpenAIWire.ErrorBody, retryAfter: String?) -> TroupeError {
        let message = body.message.flatMap { $0.isEmpty ? nil : $0 } ?? "no error message"
        var details = details()
        if let status { details["status"] = "\(status)" }
        if let type = body.type { details["type"] = type }
        if let code = body.code, !code.isEmpty { details["code"] = code }
        if let param = body.param, !param.isEmpty { details["param"] = param }
        if let retryAfter { details["retryAfter"] = retryAfter }
        let statusText = status.map { "HTTP \($0)" } ?? "an error in the answer"
        switch status ?? Self.impliedStatus(of: body) {
        case 401, 403:
            return TroupeError(
                .authentication,
                "The model API at \(endpoint) rejected the credentials (\(statusText)): \(message). Check OPENAI_API_KEY.",
                details: details
            )
        case 429:
            return TroupeError(.rateLimited, "The model API at \(endpoint) is rate limiting (\(statusText)): \(message)", details: details)
        case .some(let code) where (400..<500).contains(code) && code != 408 && code != 409:
            return TroupeError(
                .invalidInput, "The model API at \(endpoint) refused the request (\(statusText)): \(message)", details: details)
        default:
            return TroupeError(.modelAPI, "The model API at \(endpoint) failed (\(statusText)): \(message)", details: details)
        }
    }

    /// The HTTP status an error body sent without one stands for, if it says.
    private static func impliedStatus(of body: OpenAIWire.ErrorBody) -> Int? {
        if let code = body.code, let number = Int(code), (400..<600).contains(number) { return number }
        let words = [body.code, body.type].compactMap { $0?.lowercased() }
        if words.contains(where: { $0.contains("rate_limit") || $0 == "insufficient_quota" }) { return 429 }
        if words.contains(where: { $0.contains("invalid_api_key") || $0.contains("authentication") || $0.contains("permission") }) {
            return 401
        }
        // TGI's error_type: `overloaded` (its queue is full), `validation` (the request is wrong).
        if words.contains("overloaded") || words.contains("overloaded_error") { return 503 }
        let refusedRequest = [
            "context_length_exceeded", "invalid_request_error", "invalid_request", "bad_request", "not_found_error", "validation",
        ]
        if words.contains(where: refusedRequest.contains) { return 400 }
        return nil
    }

    private func transportError(_ error: any Error, _ activity: String) -> TroupeError {
        if let error = error as? TroupeError { return error }
        if error is CancellationError { return TroupeError(.cancelled, "The model call was cancelled.") }
        let (code, cause) = TransportFailure.describe(error)
        return TroupeError(
            code,
            "Could not reach the model at \(endpoint) while \(activity): \(cause).",
            details: details(),
            // Never the client's own description: for a refused header it quotes the value.
            underlying: error is HTTPClientError ? nil : error
        )
    }

    /// What every error of this client says about where it happened: the endpoint and the model.
    private func details(_ more: [String: String] = [:]) -> [String: String] {
        more.merging(["endpoint": endpoint, "model": configuration.model]) { $1 }
    }

    private static func preview(_ body: ByteBuffer) -> String {
        String(decoding: body.readableBytesView.prefix(500), as: UTF8.self)
    }
}

extension TroupeError {
    /// A 400 that says the model takes `max_completion_tokens` instead of `max_tokens` (not one that
    /// says the value of `max_tokens` is too large).
    fileprivate var asksForCompletionTokens: Bool {
        guard code == .invalidInput, details["status"] == "400" else { return false }
        let text = message.lowercased()
        return text.contains("max_completion_tokens") || (text.contains("max_tokens") && text.contains("unsupported parameter"))
    }

    /// A 400 that says the server does not take `parameter` (for `response_format`, also one that
    /// says it does not do JSON Schema / structured output).
    fileprivate func refusesParameter(_ parameter: String) -> Bool {
        guard code == .invalidInput, details["status"] == "400" else { return false }
        let text = message.lowercased() + " " + (details["param"] ?? "").lowercased()
        // "Invalid schema for response_format 'plan': …" is our schema's fault, not a server
        // that lacks the feature: turning structured output off would hide it.
        if text.contains("invalid schema") { return false }
        if text.contains(parameter) { return true }
        return parameter == "response_format" && (text.contains("json_schema") || text.contains("structured output"))
    }
}

extension ChatRequest {
    fileprivate var asksForJSONSchema: Bool {
        if case .jsonSchema = responseFormat { true } else { false }
    }

    /// The request with a `json_schema` response format turned into an instruction in the prompt.
    fileprivate func withSchemaInPrompt() -> ChatRequest {
        guard case .jsonSchema(let name, let schema, _) = responseFormat else { return self }
        var request = self
        request.responseFormat = .text
        let instruction =
            "Answer with one JSON object only, no prose and no code fences. It must match this JSON Schema "
            + "(\(name)): \(schema.jsonValue.jsonString)"
        // First, in the system message: strict chat templates accept a system message only there.
        if let first = request.messages.first, first.role == .system {
            request.messages[0] = .system((first.content.map { $0 + "\n\n" } ?? "") + instruction)
        } else {
            request.messages.insert(.system(instruction), at: 0)
        }
        return request
    }
}
