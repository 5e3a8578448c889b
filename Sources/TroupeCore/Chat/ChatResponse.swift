/// Why the model stopped producing output.
public enum FinishReason: String, Sendable, Hashable, Codable {
    case stop, length, toolCalls, contentFilter, other
}

/// Token counts of one or more model calls.
public struct Usage: Sendable, Hashable, Codable {
    public var inputTokens: Int
    public var outputTokens: Int
    public var cachedTokens: Int

    public init(inputTokens: Int = 0, outputTokens: Int = 0, cachedTokens: Int = 0) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.cachedTokens = cachedTokens
    }

    public var totalTokens: Int { Self.sum(inputTokens, outputTokens) }

    public static let zero = Usage()

    /// Sums saturate: a server's absurd usage figure must not crash the process that adds it up.
    public static func + (lhs: Usage, rhs: Usage) -> Usage {
        Usage(
            inputTokens: sum(lhs.inputTokens, rhs.inputTokens),
            outputTokens: sum(lhs.outputTokens, rhs.outputTokens),
            cachedTokens: sum(lhs.cachedTokens, rhs.cachedTokens)
        )
    }

    private static func sum(_ lhs: Int, _ rhs: Int) -> Int {
        let (result, overflow) = lhs.addingReportingOverflow(rhs)
        return overflow ? (rhs > 0 ? .max : .min) : result
    }

    public static func += (lhs: inout Usage, rhs: Usage) { lhs = lhs + rhs }
}

/// A model's complete answer.
public struct ChatResponse: Sendable, Hashable, Codable {
    public var message: ChatMessage
    public var finishReason: FinishReason
    public var usage: Usage
    /// The model that answered, as the provider names it.
    public var model: String
    /// The server's word on its rate limits, when it sent one; not journaled.
    public var rateLimit: RateLimitStatus?

    public init(
        message: ChatMessage,
        finishReason: FinishReason,
        usage: Usage = .zero,
        model: String = "",
        rateLimit: RateLimitStatus? = nil
    ) {
        self.message = message
        self.finishReason = finishReason
        self.usage = usage
        self.model = model
        self.rateLimit = rateLimit
    }

    private enum CodingKeys: String, CodingKey {
        case message, finishReason, usage, model
    }
}
