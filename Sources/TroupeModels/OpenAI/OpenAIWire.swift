import TroupeCore

/// The Chat Completions wire format, as OpenAI and compatible servers speak it. Only the fields
/// Troupe sends or reads; unknown fields in answers are ignored.
package enum OpenAIWire {
    package struct Message: Codable {
        var role: String
        var content: String?
        var tool_calls: [ToolCallWire]?
        var tool_call_id: String?
    }

    package struct ToolCallWire: Codable {
        var id: String?
        var type: String?
        var function: FunctionWire
    }

    package struct FunctionWire: Codable {
        var name: String?
        var arguments: String?
    }

    package struct Response: Decodable {
        var model: String?
        var choices: [Choice]?
        var usage: UsageWire?
    }

    package struct Choice: Decodable {
        var message: Message?
        var finish_reason: String?
    }

    package struct UsageWire: Decodable {
        var prompt_tokens: Int?
        var completion_tokens: Int?
        var prompt_tokens_details: PromptDetails?

        var usage: Usage {
            Usage(
                inputTokens: prompt_tokens ?? 0,
                outputTokens: completion_tokens ?? 0,
                cachedTokens: prompt_tokens_details?.cached_tokens ?? 0
            )
        }
    }

    package struct PromptDetails: Decodable {
        var cached_tokens: Int?
    }

    package struct Chunk: Decodable {
        var model: String?
        var choices: [ChunkChoice]?
        var usage: UsageWire?
        var error: ErrorBody?
    }

    package struct ChunkChoice: Decodable {
        var delta: Delta?
        var finish_reason: String?
    }

    package struct Delta: Decodable {
        var content: String?
        var tool_calls: [ToolCallDelta]?
    }

    package struct ToolCallDelta: Decodable {
        var index: Int?
        var id: String?
        var function: FunctionWire?
    }

    package struct ErrorEnvelope: Decodable {
        var error: ErrorBody?
    }

    package struct ErrorBody: Decodable {
        var message: String?
        var type: String?
        var code: CodeValue?
        var param: String?
    }

    /// Servers send `code` as a string or a number.
    package struct CodeValue: Decodable {
        var text: String
        package init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let string = try? container.decode(String.self) {
                text = string
            } else if let number = try? container.decode(Int.self) {
                text = String(number)
            } else {
                text = ""
            }
        }
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
    package static func body(for request: ChatRequest, model: String, stream: Bool) -> [UInt8] {
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
            json.key("max_tokens")
            json.int(maxTokens)
        }
        if let seed = request.seed {
            json.key("seed")
            json.int(seed)
        }
        if stream {
            json.key("stream")
            json.bool(true)
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
