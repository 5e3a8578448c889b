public import TroupeCore

/// Builds complete tool calls from streamed deltas.
///
/// Deltas are matched by `index`. Some servers omit it: then a delta with a new `id` starts a new
/// call and a delta without one continues the last call. Others (Ollama, LiteLLM's Responses
/// bridge, Gemini adapters) stream every parallel call with `index: 0`, each with its own id: a
/// delta whose index matches a call that already has a different id starts a new call if it
/// names a function or the earlier call's arguments are complete, and later deltas of that index
/// continue the newest one. A new id without either (Poolside) is another name for the same call.
public struct ToolCallAssembler: Sendable {
    private struct Partial: Sendable {
        /// The index the server gave (or one made up), and the order the call began in.
        var index: Int
        var order: Int
        var id: String
        /// Other ids the server sent for this call later on (Poolside sends a second id on
        /// every argument delta after the first).
        var aliases: Set<String> = []
        var name: String
        var arguments: String

        func answers(to id: String) -> Bool { self.id == id || aliases.contains(id) }
    }

    private var calls: [Partial] = []

    public init() {}

    /// Adds one delta; returns the position of the call it was assigned to (0, 1, … in the order
    /// the calls will be returned).
    @discardableResult
    public mutating func add(index: Int?, id: String?, name: String?, arguments: String?) -> Int {
        let id = id.flatMap { $0.isEmpty ? nil : $0 }
        let name = name.flatMap { $0.isEmpty ? nil : $0 }
        let position: Int
        if let index {
            if let existing = calls.lastIndex(where: { $0.index == index }),
                id == nil || calls[existing].id.isEmpty || calls[existing].answers(to: id!)
                    || !startsAnotherCall(after: calls[existing], name: name)
            {
                position = existing
            } else {
                position = start(index: index)
            }
        } else if let id {
            if let existing = calls.firstIndex(where: { $0.answers(to: id) }) {
                position = existing
            } else if let last = calls.indices.last, calls[last].id.isEmpty || !startsAnotherCall(after: calls[last], name: name) {
                position = last
            } else {
                position = start(index: (calls.map(\.index).max() ?? -1) + 1)
            }
        } else if let last = calls.indices.last {
            position = last
        } else {
            position = start(index: 0)
        }
        if let id {
            if calls[position].id.isEmpty {
                calls[position].id = id
            } else if calls[position].id != id {
                calls[position].aliases.insert(id)
            }
        }
        if let name {
            // Most servers send the name once; some repeat it in every delta.
            if calls[position].name != name { calls[position].name += name }
        }
        if let arguments { calls[position].arguments += arguments }
        return ordered.firstIndex { $0.order == calls[position].order } ?? position
    }

    /// Whether a delta with an id `call` has not seen begins another call: it names a function,
    /// or `call`'s arguments are already a whole JSON value. Otherwise it is the same call under
    /// a new id, as Poolside sends it.
    private func startsAnotherCall(after call: Partial, name: String?) -> Bool {
        if name != nil { return true }
        return !call.arguments.isEmpty && (try? JSONValue.parse(call.arguments)) != nil
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
