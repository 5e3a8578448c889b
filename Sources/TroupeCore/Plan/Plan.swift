/// A validated plan: the steps that reach a goal, with the order they depend on.
///
/// The JSON form is a public contract (see `docs/PLAN_FORMAT.md`):
/// `{"steps": [{"id", "title", "instruction", "tools", "dependsOn"}]}` with every field present.
public struct Plan: Sendable, Hashable, Codable {
    public var steps: [PlanStep]

    public init(steps: [PlanStep]) {
        self.steps = steps
    }

    /// The step called `id`, if any.
    public func step(_ id: String) -> PlanStep? {
        steps.first { $0.id == id }
    }

    /// The JSON Schema a plan must satisfy; the planner sends it as `response_format` `troupe_plan`.
    public static let schema: JSONSchema = .object([
        .init(
            "steps",
            .array(
                of: .object([
                    .init("id", .string("Short unique id such as s1, s2.", minLength: 1, maxLength: 64)),
                    .init("title", .string("A few words naming the step.", minLength: 1, maxLength: 200)),
                    .init("instruction", .string("What the executor must do in this step, self-contained.", minLength: 1)),
                    .init("tools", .array(of: .string(), "Names of the tools this step may use; empty means all.")),
                    .init("dependsOn", .array(of: .string(), "Ids of steps that must finish before this one.")),
                ]),
                "The steps, in a sensible order.",
                minItems: 1
            )
        )
    ])
}

/// One step of a ``Plan``.
public struct PlanStep: Sendable, Hashable, Codable {
    public var id: String
    public var title: String
    public var instruction: String
    /// Tools this step may use; empty means all of the agent's tools.
    public var tools: [String]
    /// Steps that must succeed before this one starts.
    public var dependsOn: [String]

    public init(id: String, title: String, instruction: String, tools: [String] = [], dependsOn: [String] = []) {
        self.id = id
        self.title = title
        self.instruction = instruction
        self.tools = tools
        self.dependsOn = dependsOn
    }
}
