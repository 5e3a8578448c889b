/// An incremental piece of a streamed answer.
public enum ChatStreamEvent: Sendable, Hashable {
    /// More answer text.
    case textDelta(String)
    /// A tool call whose arguments are still arriving; `index` orders parallel calls.
    case toolCallDelta(index: Int, id: String?, name: String?, argumentsDelta: String)
    /// The stream finished: the assembled response, usage included.
    case completed(ChatResponse)
}

/// A chat model: the OpenAI-compatible client, a scripted test double, or a resilience wrapper around either.
public protocol ChatModel: Sendable {
    /// Sends the request and returns the whole answer.
    func complete(_ request: ChatRequest) async throws -> ChatResponse

    /// Sends the request and returns the answer as it is produced. The last event is `.completed`.
    func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error>
}

extension ChatModel {
    /// A stream that delivers the complete answer at once: for models that cannot stream.
    public func stream(_ request: ChatRequest) -> AsyncThrowingStream<ChatStreamEvent, any Error> {
        .producing { continuation in
            let response = try await complete(request)
            if let text = response.message.content, !text.isEmpty {
                continuation.yield(.textDelta(text))
            }
            continuation.yield(.completed(response))
        }
    }

    /// Streams the request and returns the final response, calling `onEvent` for each delta.
    public func collect(
        _ request: ChatRequest,
        onEvent: (ChatStreamEvent) -> Void = { _ in }
    ) async throws -> ChatResponse {
        for try await event in stream(request) {
            if case .completed(let response) = event { return response }
            onEvent(event)
        }
        throw TroupeError(.malformedModelResponse, "The model's stream ended without a final response.")
    }
}

extension AsyncThrowingStream where Failure == any Error {
    /// A stream fed by `produce` in a task of its own: it finishes when `produce` returns, fails
    /// with what `produce` throws, and cancels the task when the consumer stops listening.
    package static func producing(_ produce: @escaping @Sendable (Continuation) async throws -> Void) -> Self {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await produce(continuation)
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
