import TroupeCore

/// The Chat Completions wire format, as OpenAI and compatible servers speak it. Only the fields
/// Troupe sends or reads; unknown fields in answers are ignored.
package enum OpenAIWire {
    package struct Request: Encodable {
        var model: String
        var messages: [Message]
        var tools: [Tool]?
        var response_format: ResponseFormat?
        var temperature: Double?
        var max_tokens: Int?
        var seed: Int?
        var stream: Bool?
        var stream_options: StreamOptions?
    }

    package struct StreamOptions: Encodable {
        var include_usage: Bool
    }

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

    package struct Tool: Encodable {
        var type = "function"
        var function: FunctionSpec
    }

    package struct FunctionSpec: Encodable {
        var name: String
        var description: String
        var parameters: JSONSchema
    }

    package struct ResponseFormat: Encodable {
        var type: String
        var json_schema: JSONSchemaFormat?
    }

    package struct JSONSchemaFormat: Encodable {
        var name: String
        var schema: JSONSchema
        var strict: Bool
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

    package static func request(for request: ChatRequest, model: String, stream: Bool) -> Request {
        let messages = request.messages.map { message in
            Message(
                role: message.role.rawValue,
                content: message.content ?? (message.role == .assistant ? nil : ""),
                tool_calls: message.toolCalls.isEmpty
                    ? nil
                    : message.toolCalls.map {
                        ToolCallWire(id: $0.id, type: "function", function: FunctionWire(name: $0.name, arguments: $0.arguments))
                    },
                tool_call_id: message.toolCallID
            )
        }
        let format: ResponseFormat? =
            switch request.responseFormat {
            case .text: nil
            case .jsonSchema(let name, let schema, let strict):
                ResponseFormat(type: "json_schema", json_schema: JSONSchemaFormat(name: name, schema: schema, strict: strict))
            }
        return Request(
            model: model,
            messages: messages,
            tools: request.tools.isEmpty
                ? nil
                : request.tools.map { Tool(function: FunctionSpec(name: $0.name, description: $0.description, parameters: $0.parameters)) },
            response_format: format,
            temperature: request.temperature,
            max_tokens: request.maxTokens,
            seed: request.seed,
            stream: stream ? true : nil,
            stream_options: stream ? StreamOptions(include_usage: true) : nil
        )
    }
}
