public import TroupeCore

/// Builds complete tool calls from streamed deltas.
///
/// Deltas are matched by `index`. Some servers omit it: then a delta with a new `id` starts a new
/// call and a delta without one continues the last call.
public struct ToolCallAssembler: Sendable {
    private struct Partial: Sendable {
        var index: Int
        var id: String
        var name: String
        var arguments: String
    }

    private var calls: [Partial] = []

    public init() {}

    /// Adds one delta; returns the index the delta was assigned to.
    @discardableResult
    public mutating func add(index: Int?, id: String?, name: String?, arguments: String?) -> Int {
        let position: Int
        if let index {
            if let existing = calls.firstIndex(where: { $0.index == index }) {
                position = existing
            } else {
                calls.append(Partial(index: index, id: "", name: "", arguments: ""))
                position = calls.count - 1
            }
        } else if let id, !id.isEmpty {
            if let existing = calls.firstIndex(where: { $0.id == id }) {
                position = existing
            } else if let last = calls.indices.last, calls[last].id.isEmpty {
                position = last
            } else {
                calls.append(Partial(index: (calls.map(\.index).max() ?? -1) + 1, id: "", name: "", arguments: ""))
                position = calls.count - 1
            }
        } else if let last = calls.indices.last {
            position = last
        } else {
            calls.append(Partial(index: 0, id: "", name: "", arguments: ""))
            position = 0
        }
        if let id, !id.isEmpty { calls[position].id = id }
        if let name, !name.isEmpty {
            // Most servers send the name once; some repeat it in every delta.
            if calls[position].name != name { calls[position].name += name }
        }
        if let arguments { calls[position].arguments += arguments }
        return calls[position].index
    }

    /// Whether any delta has arrived.
    public var isEmpty: Bool { calls.isEmpty }

    /// The calls assembled so far, ordered by index. Calls without an id get a generated one.
    public func toolCalls() -> [ToolCall] {
        calls.sorted { $0.index < $1.index }.map { partial in
            ToolCall(id: partial.id.isEmpty ? "call_\(partial.index)" : partial.id, name: partial.name, arguments: partial.arguments)
        }
    }
}
