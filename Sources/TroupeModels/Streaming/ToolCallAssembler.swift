public import TroupeCore

/// Builds complete tool calls from streamed deltas.
///
/// Deltas are matched by `index`. Some servers omit it: then a delta with a new `id` starts a new
/// call and a delta without one continues the last call. Others (Ollama, LiteLLM's Responses
/// bridge, Gemini adapters) stream every parallel call with `index: 0`, each with its own id: a
/// delta whose index matches a call that already has a different id starts a new call, and later
/// deltas of that index continue the newest one.
public struct ToolCallAssembler: Sendable {
    private struct Partial: Sendable {
        /// The index the server gave (or one made up), and the order the call began in.
        var index: Int
        var order: Int
        var id: String
        var name: String
        var arguments: String
    }

    private var calls: [Partial] = []

    public init() {}

    /// Adds one delta; returns the position of the call it was assigned to (0, 1, … in the order
    /// the calls will be returned).
    @discardableResult
    public mutating func add(index: Int?, id: String?, name: String?, arguments: String?) -> Int {
        let id = id.flatMap { $0.isEmpty ? nil : $0 }
        let position: Int
        if let index {
            if let existing = calls.lastIndex(where: { $0.index == index }),
                id == nil || calls[existing].id.isEmpty || calls[existing].id == id
            {
                position = existing
            } else {
                position = start(index: index)
            }
        } else if let id {
            if let existing = calls.firstIndex(where: { $0.id == id }) {
                position = existing
            } else if let last = calls.indices.last, calls[last].id.isEmpty {
                position = last
            } else {
                position = start(index: (calls.map(\.index).max() ?? -1) + 1)
            }
        } else if let last = calls.indices.last {
            position = last
        } else {
            position = start(index: 0)
        }
        if let id { calls[position].id = id }
        if let name, !name.isEmpty {
            // Most servers send the name once; some repeat it in every delta.
            if calls[position].name != name { calls[position].name += name }
        }
        if let arguments { calls[position].arguments += arguments }
        return ordered.firstIndex { $0.order == calls[position].order } ?? position
    }

    private mutating func start(index: Int) -> Int {
        calls.append(Partial(index: index, order: calls.count, id: "", name: "", arguments: ""))
        return calls.count - 1
    }

    /// The calls by index, then in the order they began (several may share an index).
    private var ordered: [Partial] {
        calls.sorted { ($0.index, $0.order) < ($1.index, $1.order) }
    }

    /// Whether any delta has arrived.
    public var isEmpty: Bool { calls.isEmpty }

    /// The calls assembled so far, ordered by index. Calls without an id get a generated one:
    /// `call_INDEX`, and `call_INDEX_N` for the Nth more call of the same index.
    public func toolCalls() -> [ToolCall] {
        var seen: [Int: Int] = [:]
        return ordered.map { partial in
            let earlier = seen[partial.index, default: 0]
            seen[partial.index] = earlier + 1
            let generated = earlier == 0 ? "call_\(partial.index)" : "call_\(partial.index)_\(earlier)"
            return ToolCall(id: partial.id.isEmpty ? generated : partial.id, name: partial.name, arguments: partial.arguments)
        }
    }
}
