import Synchronization
public import TroupeCore

/// A ``ChatModel`` that answers from a script, in order, and records every request.
///
/// Use it to drive agents in tests without a network: each call takes the next reply. When the
/// script runs out, the call fails with a clear error rather than hanging.
public final class ScriptedModel: ChatModel {
    /// One scripted reply.
    public enum Reply: Sendable {
        case response(ChatResponse)
        case failure(TroupeError)
        /// Computes the reply from the request (e.g. to echo a tool result).
        case handler(@Sendable (ChatRequest) async throws -> ChatResponse)
    }

    private struct State {
        var replies: [Reply]
        var requests: [ChatRequest] = []
    }

    private let state: Mutex<State>

    public init(_ replies: [Reply] = []) {
        state = Mutex(State(replies: replies))
    }

    /// Adds replies to the end of the script.
    public func enqueue(_ replies: Reply...) {
        state.withLock { $0.replies += replies }
    }

    /// Every request received so far, in order.
    public var requests: [ChatRequest] { state.withLock { $0.requests } }

    /// How many replies are left.
    public var remaining: Int { state.withLock { $0.replies.count } }

    public func complete(_ request: ChatRequest) async throws -> ChatResponse {
        let reply = state.withLock { state -> Reply? in
            state.requests.append(request)
            return state.replies.isEmpty ? nil : state.replies.removeFirst()
        }
        switch reply {
        case .response(let response)?: return response
        case .failure(let error)?: throw error
        case .handler(let handler)?: return try await handler(request)
        case nil:
            throw TroupeError(.internal, "ScriptedModel ran out of replies at request \(requests.count).")
        }
    }
}

extension ChatResponse {
    /// A plain text answer.
    public static func text(_ text: String, finishReason: FinishReason = .stop, usage: Usage = Usage(inputTokens: 10, outputTokens: 5))
        -> ChatResponse
    {
        ChatResponse(message: .assistant(text), finishReason: finishReason, usage: usage, model: "scripted")
    }

    /// An answer that calls tools; `calls` are (name, JSON arguments text).
    public static func toolCalls(_ calls: [(name: String, arguments: String)], usage: Usage = Usage(inputTokens: 10, outputTokens: 5))
        -> ChatResponse
    {
        let toolCalls = calls.enumerated().map { index, call in ToolCall(id: "call_\(index)", name: call.name, arguments: call.arguments) }
        return ChatResponse(message: .assistant(nil, toolCalls: toolCalls), finishReason: .toolCalls, usage: usage, model: "scripted")
    }

    /// An answer that calls one tool.
    public static func toolCall(_ name: String, _ arguments: String) -> ChatResponse {
        toolCalls([(name, arguments)])
    }

    /// A planner answer carrying `plan` as JSON.
    public static func plan(_ plan: Plan) -> ChatResponse {
        .text((try? JSONCoding.encodeString(plan)) ?? "{}")
    }
}
