public import TroupeCore

/// Turns a goal into a plan: builds the planner's model requests and judges its answers.
///
/// Pure: the driver makes the call and journals the answer with this agent's verdict.
public struct PlannerAgent: Sendable {
    /// The name of the structured-output schema sent as `response_format`.
    public static let schemaName = "troupe_plan"

    public init() {}

    /// What the planner's answer was judged to be.
    public enum Verdict: Sendable, Hashable {
        case accepted(Plan)
        case rejected([String])
    }

    /// The request for the planner's next answer in the machine's current planning round.
    public func request(for machine: RunStateMachine, tools: [ToolSpec]) -> ChatRequest {
        let configuration = machine.configuration
        var messages: [ChatMessage] = [.system(systemPrompt(tools: tools, maxSteps: configuration.maxSteps))]
        if let reason = machine.replanReason {
            messages.append(.user(replanPrompt(machine, reason: reason)))
        } else {
            messages.append(.user("Goal: \(machine.goal)"))
        }
        for turn in machine.plannerTurns {
            messages.append(.assistant(turn.response.message.content ?? ""))
            if let problems = turn.problems {
                messages.append(
                    .user(
                        "Your plan was rejected:\n" + problems.map { "- \($0)" }.joined(separator: "\n")
                            + "\nReply with a corrected plan: one JSON object, nothing else."
                    )
                )
            }
        }
        return ChatRequest(
            messages: messages,
            responseFormat: .jsonSchema(name: Self.schemaName, schema: Plan.schema.strictForOpenAI(), strict: true),
            temperature: configuration.temperature,
            maxTokens: configuration.maxTokens,
            metadata: ["troupe.purpose": machine.replanReason == nil ? "plan" : "replan"]
        )
    }

    /// Judges a planner answer. Throws only when the answer can never be repaired (content filter).
    public func judge(_ response: ChatResponse, validator: PlanValidator) throws(TroupeError) -> Verdict {
        if response.finishReason == .contentFilter {
            throw TroupeError(.contentFiltered, "The provider's content filter stopped the planner's answer.")
        }
        let text = response.message.content ?? ""
        if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            let note = response.message.toolCalls.isEmpty ? "" : " Do not call tools while planning."
            return .rejected(["The answer was empty. Reply with the plan as one JSON object.\(note)"])
        }
        switch validator.validate(text: text) {
        case .success(let plan):
            return .accepted(plan)
        case .failure(let problems):
            var list = problems.problems
            if response.finishReason == .length {
                list.insert("The answer was cut off at the output token limit; make the plan shorter.", at: 0)
            }
            return .rejected(list)
        }
    }

    func systemPrompt(tools: [ToolSpec], maxSteps: Int) -> String {
        let toolList =
            tools.isEmpty
            ? "(no tools: steps can only reason and write)"
            : tools.map { "- \($0.name): \($0.description)" }.joined(separator: "\n")
        return """
            You are the planner of a plan-and-execute agent. Break the user's goal into at most \(maxSteps) steps \
            that an executor with the tools below can carry out one at a time.

            Tools:
            \(toolList)

            Answer with one JSON object and nothing else:
            {"steps": [{"id": "s1", "title": "short name", "instruction": "what to do, self-contained", \
            "tools": ["tool names the step needs, or empty for all"], "dependsOn": ["ids of steps that must finish first"]}]}
            Every field is required. Ids are unique short words of letters, digits, _ and - (s1, s2, …). Only list tools named above. Steps without dependencies may run in \
            parallel; the last step should produce the answer to the goal.
            """
    }

    func replanPrompt(_ machine: RunStateMachine, reason: String) -> String {
        let done = machine.steps.filter { $0.status == .succeeded }
        let doneText =
            done.isEmpty
            ? "(none)"
            : done.map { "- \($0.step.id) (\($0.step.title)): \(Self.clip($0.output ?? "", 2_000))" }.joined(separator: "\n")
        return """
            Goal: \(machine.goal)

            The plan was being carried out when this happened: \(reason)

            Steps already finished, with their results:
            \(doneText)

            Plan the remaining work. New steps may depend on the finished steps' ids but must not reuse them.
            """
    }

    static func clip(_ text: String, _ limit: Int) -> String {
        text.count <= limit ? text : String(text.prefix(limit)) + " …(\(text.count - limit) more characters)"
    }
}
