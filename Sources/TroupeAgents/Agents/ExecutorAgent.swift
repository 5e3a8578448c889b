import Foundation
public import TroupeCore

/// Carries out one step: builds each turn's model request from the step's transcript, and runs
/// the tool calls the model asks for — validating them first, and turning every failure into a
/// tool result the model can read, never into a crash.
public struct ExecutorAgent: Sendable {
    /// The longest tool output sent back to the model, in characters.
    public var maxToolOutputCharacters: Int

    public init(maxToolOutputCharacters: Int = 64_000) {
        self.maxToolOutputCharacters = maxToolOutputCharacters
    }

    /// The request for the step's next turn.
    public func request(
        for state: StepState,
        in machine: RunStateMachine,
        tools: ToolRegistry,
        purpose: ModelCallPurpose
    ) -> ChatRequest {
        var messages: [ChatMessage] = [.system(systemPrompt), .user(stepPrompt(state, in: machine))]
        // Parallel tool calls finish in any order; their results are sent in the order they were asked for.
        var results: [(key: ActivityKey, message: ChatMessage)] = []
        func flushResults() {
            messages += results.sorted { $0.key < $1.key }.map(\.message)
            results = []
        }
        for item in state.transcript {
            switch item {
            case .assistant(_, let response):
                flushResults()
                messages.append(response.message)
            case .toolResult(let key, let call, let output):
                results.append((key, .tool(callID: call.id, output.isError ? "Error: \(output.content)" : output.content)))
            }
        }
        flushResults()
        let offered: [ToolSpec]
        if purpose == .finalAnswer {
            offered = []
            messages.append(
                .user(
                    "You have used all \(machine.configuration.maxIterations) turns for this step. "
                        + "Answer now with what you have found, without calling tools."
                )
            )
        } else {
            offered = tools.specs(state.step.tools)
        }
        return ChatRequest(
            messages: messages,
            tools: offered,
            temperature: machine.configuration.temperature,
            maxTokens: machine.configuration.maxTokens,
            metadata: ["troupe.purpose": purpose.rawValue, "troupe.step": state.step.id]
        )
    }

    /// Runs one tool call under the registry's ``ToolPolicy``. Unknown tools, arguments that are
    /// not JSON or break the schema, calls over the tool's limit per run, calls over the tool's
    /// time limit, and tool errors all come back as an error output for the model. (Calls that
    /// need a person's approval reach it only once approved: the driver journals the request and
    /// the decision first.)
    ///
    /// - Parameters:
    ///   - truncated: the model's answer was cut off at its token limit (`finish_reason`
    ///     `length`), so broken arguments are most likely cut short; the error says so.
    ///   - earlierCalls: how many calls of this tool the run made before this one.
    ///   - approved: a person approved this call (journaled); a call of a tool that needs
    ///     approval is refused without it.
    public func run(
        _ call: ToolCall,
        allowed: [String],
        tools: ToolRegistry,
        context: ToolContext,
        truncated: Bool = false,
        earlierCalls: Int = 0,
        approved: Bool = false
    ) async -> ToolOutput {
        let permitted = allowed.isEmpty || allowed.contains(call.name)
        guard permitted, let tool = tools.tool(named: call.name) else {
            let available = tools.availableNames.filter { allowed.isEmpty || allowed.contains($0) }
            return .error(
                "Unknown tool '\(call.name)'. Tools available in this step: "
                    + (available.isEmpty ? "none" : available.joined(separator: ", ")) + "."
            )
        }
        let arguments: JSONValue
        do {
            arguments = try JSONValue.parse(call.arguments.isEmpty ? "{}" : call.arguments)
        } catch {
            let cause = truncated ? " Your answer was cut off at the output token limit: send shorter arguments." : ""
            return .error("The arguments for \(call.name) are not valid JSON (\(error.message)). Send a JSON object.\(cause)")
        }
        let violations = tool.parameters.validate(arguments)
        if !violations.isEmpty {
            return .error(
                "The arguments for \(call.name) do not match its schema:\n"
                    + violations.prefix(10).map { "- \($0)" }.joined(separator: "\n")
            )
        }
        if tools.policy.needsApproval(call.name) && !approved {
            return .error("\(call.name) needs a person's approval for each call, and this call has none; it was not run.")
        }
        let limits = tools.policy.limits(for: call.name)
        if let most = limits.maxCallsPerRun, earlierCalls >= most {
            return .error("\(call.name) may be called at most \(most) times in a run, and that many calls were made. Do without it.")
        }
        do {
            let output: ToolOutput
            if let seconds = limits.timeoutSeconds {
                output =
                    try await withTimeLimit(.seconds(seconds)) { try await tool.call(arguments, context: context) }
                    ?? .error("\(call.name) took longer than its limit of \(String(format: "%g", seconds)) s and was stopped.")
            } else {
                output = try await tool.call(arguments, context: context)
            }
            return clipped(output)
        } catch let error as TroupeError {
            return .error(error.message)
        } catch is CancellationError {
            return .error("The call was cancelled.")
        } catch {
            return .error("\(call.name) failed: \(error)")
        }
    }

    private func clipped(_ output: ToolOutput) -> ToolOutput {
        guard output.content.count > maxToolOutputCharacters else { return output }
        let kept = output.content.prefix(maxToolOutputCharacters)
        return ToolOutput(
            kept + "\n…[output truncated: \(output.content.count - maxToolOutputCharacters) more characters]",
            isError: output.isError
        )
    }

    let systemPrompt = """
        You are an executor agent. You carry out one step of a larger plan, using the tools offered when they help. \
        When the step is done, reply with a concise account of its result, without calling a tool; that reply is \
        what later steps and the user will see.
        """

    func stepPrompt(_ state: StepState, in machine: RunStateMachine) -> String {
        var text = "Overall goal: \(machine.goal)\n\nYour step: \(state.step.id) — \(state.step.title)\n\(state.step.instruction)"
        let earlier = state.step.dependsOn.compactMap { machine.step($0) }.filter { $0.status == .succeeded }
        if !earlier.isEmpty {
            text += "\n\nResults of the steps this one builds on:"
            for dependency in earlier {
                text += "\n[\(dependency.step.id)] \(dependency.step.title): \(PlannerAgent.clip(dependency.output ?? "", 4_000))"
            }
        }
        return text
    }
}
