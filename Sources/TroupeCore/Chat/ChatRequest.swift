/// What a model needs to know about a tool it may call.
public struct ToolSpec: Sendable, Hashable, Codable {
    public var name: String
    public var description: String
    public var parameters: JSONSchema

    public init(name: String, description: String, parameters: JSONSchema) {
        self.name = name
        self.description = description
        self.parameters = parameters
    }
}

/// How the model must shape its answer.
public enum ResponseFormat: Sendable, Hashable, Codable {
    case text
    /// Structured output: the answer must satisfy `schema` (OpenAI `json_schema`, optionally strict).
    case jsonSchema(name: String, schema: JSONSchema, strict: Bool)
}

/// A request to a chat model.
public struct ChatRequest: Sendable, Hashable {
    public var messages: [ChatMessage]
    public var tools: [ToolSpec]
    public var responseFormat: ResponseFormat
    public var temperature: Double?
    public var maxTokens: Int?
    public var seed: Int?
    /// Free-form tags that travel with the request (run id, step, activity key). Never sent to the provider.
    public var metadata: [String: String]

    public init(
        messages: [ChatMessage],
        tools: [ToolSpec] = [],
        responseFormat: ResponseFormat = .text,
        temperature: Double? = nil,
        maxTokens: Int? = nil,
        seed: Int? = nil,
        metadata: [String: String] = [:]
    ) {
        self.messages = messages
        self.tools = tools
        self.responseFormat = responseFormat
        self.temperature = temperature
        self.maxTokens = maxTokens
        self.seed = seed
        self.metadata = metadata
    }
}
