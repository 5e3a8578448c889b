public import Logging

/// What calling a tool does to the world. Durable resume relies on it: after a crash, an
/// unfinished `.readOnly` or `.idempotent` call is run again, a `.sideEffecting` one never is.
public enum ToolEffect: String, Sendable, Hashable, Codable {
    /// Only reads (list files, fetch a page).
    case readOnly
    /// Changes the world, but doing it twice is the same as once (write this content to that file).
    case idempotent
    /// Changes the world in a way that must not be repeated (append, send, run a command).
    case sideEffecting
}

/// What a tool learns about the call it serves.
public struct ToolContext: Sendable {
    public var runID: RunID
    public var stepID: String
    /// Unique per call and stable across resumes: use it to make external side effects idempotent.
    public var idempotencyKey: String
    /// The directory the run's tools work in.
    public var workspace: String
    public var logger: Logger

    public init(runID: RunID, stepID: String, idempotencyKey: String, workspace: String, logger: Logger) {
        self.runID = runID
        self.stepID = stepID
        self.idempotencyKey = idempotencyKey
        self.workspace = workspace
        self.logger = logger
    }
}

/// A tool's result, as the model will read it.
public struct ToolOutput: Sendable, Hashable, Codable {
    public var content: String
    /// `true` when the call failed; the model sees the message and may try again differently.
    public var isError: Bool

    public init(_ content: String, isError: Bool = false) {
        self.content = content
        self.isError = isError
    }

    /// A failed call's output: the message tells the model what went wrong.
    public static func error(_ message: String) -> ToolOutput { ToolOutput(message, isError: true) }
}

/// Something an agent can do: a name, a description and a JSON Schema for the model, and the call itself.
///
/// Arguments reach `call` already validated against ``parameters``; they are still untrusted input
/// (a prompt-injected model chooses them), so every tool must check what it touches.
public protocol Tool: Sendable {
    /// Must match `^[a-zA-Z0-9_-]{1,64}$`, as the OpenAI API requires.
    var name: String { get }
    var description: String { get }
    var parameters: JSONSchema { get }
    var effect: ToolEffect { get }

    func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput
}

extension Tool {
    /// The tool as a model sees it.
    public var spec: ToolSpec { ToolSpec(name: name, description: description, parameters: parameters) }
}
