import TroupeCore

/// The Chat Completions wire format, as OpenAI and compatible servers speak it. Only the fields
/// Troupe sends or reads; unknown fields in answers are ignored.
package enum OpenAIWire {
    // Answers are read with `JSONParser` and `JSONFields` (one pass, no `Codable`): a field of the
    // wrong type is an error naming its path; unknown fields are ignored.

    package struct Message {
        var content: String?
        var refusal: String?
        var tool_calls: [ToolCallWire]?

        init(_ json: JSONFields) throws(TroupeError) {
            content = try json.string("content")
            refusal = try json.string("refusal")
            tool_calls = try json.objects("tool_calls")?.map { (call) throws(TroupeError) in try ToolCallWire(call) }
        }
    }

    package struct ToolCallWire {
        var id: String?
        var function: FunctionWire

        init(_ json: JSONFields) throws(TroupeError) {
            id = try json.string("id")
            function = try json.object("function").map { (fields) throws(TroupeError) in try FunctionWire(fields) } ?? FunctionWire()
        }
    }

    package struct FunctionWire {
        var name: String?
        var arguments: String?

        init() {}

        init(_ json: JSONFields) throws(TroupeError) {
            name = try json.string("name")
            // Some servers (llama.cpp builds, TGI) send the arguments as a JSON object, not as
            // the JSON text of one: written out, they are the same call.
            switch json.members["arguments"] {
            case let value? where value.objectValue != nil || value.arrayValue != nil: arguments = value.jsonString
            default: arguments = try json.string("arguments")
            }
        }
    }

    package struct Response {
        var model: String?
        var choices: [Choice]?
        var usage: UsageWire?
        /// An error sent with a success status (`200 {"error": {…}}`), as some gateways do.
        var error: ErrorBody?

        package init(_ json: JSONValue) throws(TroupeError) {
            let fields = try JSONFields(json)
            model = try fields.string("model")
            choices = try fields.objects("choices")?.map { (choice) throws(TroupeError) in try Choice(choice) }
            usage = try fields.object("usage").map { (usage) throws(TroupeError) in try UsageWire(usage) }
            error = try ErrorBody.of(fields)
        }
    }

    package struct Choice {
        var message: Message?
        var finish_reason: String?

        init(_ json: JSONFields) throws(TroupeError) {
            message = try json.object("message").map { (message) throws(TroupeError) in try Message(message) }
            finish_reason = try json.string("finish_reason")
        }
    }

    package struct UsageWire {
        var usage: Usage
        /// The largest token count taken from a server (a billion: more than any context).
        static let maximumCount = 1_000_000_000

        init(_ json: JSONFields) throws(TroupeError) {
            // Clamped: a negative or absurd count (a server's bug) must not drive the limiter or
            // the run's totals, let alone overflow them.
            func count(_ value: Int?) -> Int { min(max(value ?? 0, 0), Self.maximumCount) }
            usage = Usage(
                inputTokens: count(try json.int("prompt_tokens")),
                outputTokens: count(try json.int("completion_tokens")),
                cachedTokens: count(try json.object("prompt_tokens_details")?.int("cached_tokens"))
            )
        }
    }

    package struct Chunk {
        var model: String?
        var choices: [ChunkChoice]?
        var usage: UsageWire?
        var error: ErrorBody?

        package init(_ json: JSONValue) throws(TroupeError) {
            let fields = try JSONFields(json)
            model = try fields.string("model")
            choices = try fields.objects("choices")?.map { (choice) throws(TroupeError) in try ChunkChoice(choice) }
            usage = try fields.object("usage").map { (usage) throws(TroupeError) in try UsageWire(usage) }
            error = try ErrorBody.of(fields)
        }
    }

    package struct ChunkChoice {
        var delta: Delta?
        var finish_reason: String?

        init(_ json: JSONFields) throws(TroupeError) {
            delta = try json.object("delta").map { (delta) throws(TroupeError) in try Delta(delta) }
            finish_reason = try json.string("finish_reason")
        }
    }

    package struct Delta {
        var content: String?
        var refusal: String?
        var tool_calls: [ToolCallDelta]?

        init(_ json: JSONFields) throws(TroupeError) {
            content = try json.string("content")
            refusal = try json.string("refusal")
            tool_calls = try json.objects("tool_calls")?.map { (call) throws(TroupeError) in try ToolCallDelta(call) }
        }
    }

    package struct ToolCallDelta {
        var index: Int?
        var id: String?
        var function: FunctionWire?

        init(_ json: JSONFields) throws(TroupeError) {
            index = try json.int("index")
            id = try json.string("id")
            function = try json.object("function").map { (function) throws(TroupeError) in try FunctionWire(function) }
        }
    }

    package struct ErrorBody {
        var message: String?
        var type: String?
        /// Servers send `code` as a string or a number.
        var code: String?
        var param: String?
    }

    /// The `error` object of an error answer (`{"error": {...}}`), if the body is one.
    package static func errorBody(in body: some Collection<UInt8>) -> ErrorBody? {
        guard let json = try? JSONParser.parse(body), let fields = try? JSONFields(json) else { return nil }
        return try? ErrorBody.of(fields)
    }

    package static func finishReason(_ raw: String?) -> FinishReason {
        switch raw {
        case "stop": .stop
        case "length": .length
        case "tool_calls", "function_call": .toolCalls
        case "content_filter": .contentFilter
        default: .other
        }
    }

    /// The request body, written straight to bytes (JSONEncoder cost more than the rest of a call).
    /// - Parameter streamOptions: whether a streamed request asks for `stream_options` (usage in
    ///   the last chunk); some servers refuse the parameter.
    ///   - completionTokens: whether the answer's limit goes as `max_completion_tokens` (o-series and
    ///     gpt-5 models refuse `max_tokens`) rather than `max_tokens`.
    package static func body(
        for request: ChatRequest, model: String, stream: Bool, streamOptions: Bool = true, completionTokens: Bool = false
    ) -> [UInt8] {
        var json = JSONWriter(capacity: 1_024)
        json.beginObject()
        json.key("model")
        json.string(model)
        json.key("messages")
        json.beginArray()
        for message in request.messages {
            json.beginObject()
            json.key("role")
            json.string(message.role.rawValue)
            // Assistant turns that only call tools carry no content; every other turn has one.
            if let content = message.content ?? (message.role == .assistant ? nil : "") {
                json.key("content")
                json.string(content)
            }
            if !message.toolCalls.isEmpty {
                json.key("tool_calls")
                json.beginArray()
                for call in message.toolCalls {
                    json.beginObject()
                    json.member("id", call.id)
                    json.member("type", "function")
                    json.key("function")
                    json.beginObject()
                    json.member("name", call.name)
                    json.member("arguments", call.arguments)
                    json.endObject()
                    json.endObject()
                }
                json.endArray()
            }
            json.member("tool_call_id", message.toolCallID)
            json.endObject()
        }
        json.endArray()
        if !request.tools.isEmpty {
            json.key("tools")
            json.beginArray()
            for tool in request.tools {
                json.beginObject()
                json.member("type", "function")
                json.key("function")
                json.beginObject()
                json.member("name", tool.name)
                json.member("description", tool.description)
                json.key("parameters")
                json.value(tool.parameters.jsonValue)
                json.endObject()
                json.endObject()
            }
            json.endArray()
        }
        if case .jsonSchema(let name, let schema, let strict) = request.responseFormat {
            json.key("response_format")
            json.beginObject()
            json.member("type", "json_schema")
            json.key("json_schema")
            json.beginObject()
            json.member("name", name)
            json.key("schema")
            json.value(schema.jsonValue)
            json.key("strict")
            json.bool(strict)
            json.endObject()
            json.endObject()
        }
        if let temperature = request.temperature {
            json.key("temperature")
            json.double(temperature)
        }
        if let maxTokens = request.maxTokens {
            json.key(completionTokens ? "max_completion_tokens" : "max_tokens")
            json.int(maxTokens)
        }
        if let seed = request.seed {
            json.key("seed")
            json.int(seed)
        }
        if stream {
            json.key("stream")
            json.bool(true)
        }
        if stream && streamOptions {
            json.key("stream_options")
            json.beginObject()
            json.key("include_usage")
            json.bool(true)
            json.endObject()
        }
        json.endObject()
        return json.bytes
    }
}

extension OpenAIWire.ErrorBody {
    /// The `error` member of a body: OpenAI's object, or the plain string (with `error_type`
    /// beside it) that Hugging Face's TGI sends.
    static func of(_ fields: JSONFields) throws(TroupeError) -> Self? {
        switch fields.members["error"] {
        case nil, .null?: return nil
        case .string(let text)?:
            return Self(message: text, type: fields.members["error_type"]?.stringValue, code: nil, param: nil)
        default: return try fields.object("error").map { (error) throws(TroupeError) in try Self(error) }
        }
    }

    init(_ json: JSONFields) throws(TroupeError) {
        message = try json.string("message")
        type = try json.string("type")
        code =
            switch json.members["code"] {
            case .string(let text)?: text
            case .int(let number)?: String(number)
            default: nil
            }
        param = try json.string("param")
    }
}
