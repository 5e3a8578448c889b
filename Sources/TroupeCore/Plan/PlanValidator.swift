import Foundation

/// Checks a model's plan: JSON, schema, unique ids, known tools, known dependencies, no cycles,
/// size limits. Pure: the planner sends its problems back to the model for repair.
public struct PlanValidator: Sendable {
    public var availableTools: Set<String>
    public var maxSteps: Int
    /// Steps finished before a replan: new steps may depend on them, and may not reuse their ids.
    public var completedStepIDs: Set<String>

    public init(availableTools: Set<String>, maxSteps: Int, completedStepIDs: Set<String> = []) {
        self.availableTools = availableTools
        self.maxSteps = maxSteps
        self.completedStepIDs = completedStepIDs
    }

    /// Parses and validates a model's text answer. Accepts bare JSON or JSON inside a code fence or prose.
    public func validate(text: String) -> Result<Plan, PlanProblems> {
        guard let json = Self.extractJSON(from: text) else {
            return .failure(PlanProblems(["The answer contains no JSON object. Reply with the plan as one JSON object."]))
        }
        let value: JSONValue
        do {
            value = try JSONValue.parse(json)
        } catch {
            return .failure(PlanProblems(["The plan is not valid JSON (\(error.message))."]))
        }
        return validate(value)
    }

    /// Validates a plan already parsed as JSON.
    public func validate(_ value: JSONValue) -> Result<Plan, PlanProblems> {
        let violations = Plan.schema.validate(value)
        if !violations.isEmpty {
            return .failure(PlanProblems(violations.prefix(20).map { "Schema: \($0)" }))
        }
        let steps: [PlanStep] = (value["steps"]?.arrayValue ?? []).map { item in
            PlanStep(
                id: item["id"]?.stringValue ?? "",
                title: item["title"]?.stringValue ?? "",
                instruction: item["instruction"]?.stringValue ?? "",
                tools: item["tools"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                dependsOn: item["dependsOn"]?.arrayValue?.compactMap(\.stringValue) ?? []
            )
        }
        let plan = Plan(steps: steps)
        let problems = check(plan)
        return problems.isEmpty ? .success(plan) : .failure(PlanProblems(problems))
    }

    /// Semantic problems of a plan whose shape is right.
    public func check(_ plan: Plan) -> [String] {
        var problems: [String] = []
        if plan.steps.isEmpty { problems.append("The plan has no steps.") }
        if plan.steps.count > maxSteps {
            problems.append("The plan has \(plan.steps.count) steps; at most \(maxSteps) are allowed. Merge steps.")
        }
        var seen: Set<String> = []
        for step in plan.steps {
            if let problem = Self.idProblem(step.id) { problems.append(problem) }
            if !seen.insert(step.id).inserted { problems.append("Step id '\(step.id)' is used twice.") }
            if completedStepIDs.contains(step.id) {
                problems.append("Step id '\(step.id)' belongs to a step that already finished; use a new id.")
            }
            for tool in step.tools where !availableTools.contains(tool) {
                let known = availableTools.isEmpty ? "none" : availableTools.sorted().joined(separator: ", ")
                problems.append("Step '\(step.id)' names unknown tool '\(tool)'. Available tools: \(known).")
            }
        }
        for step in plan.steps {
            for dependency in step.dependsOn where !seen.contains(dependency) && !completedStepIDs.contains(dependency) {
                problems.append("Step '\(step.id)' depends on unknown step '\(dependency)'.")
            }
            if step.dependsOn.contains(step.id) { problems.append("Step '\(step.id)' depends on itself.") }
        }
        if let cycle = Self.findCycle(plan) {
            problems.append("The steps depend on each other in a cycle: \(cycle.joined(separator: " → ")).")
        }
        return problems
    }

    /// Why `id` cannot name a step, or `nil`. Ids are parts of activity keys
    /// (`step/attempt/call`, also the tools' idempotency keys), so they are short words of
    /// letters, digits, `_`, `-` and `.`, and never one of Troupe's own (``ActivityKey/reservedStepIDs``).
    static func idProblem(_ id: String) -> String? {
        if id.isEmpty { return "A step has an empty id." }
        let allowed = id.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x5F || byte == 0x2D || byte == 0x2E
        }
        if !allowed || id.utf8.count > 64 || id.hasPrefix(".") {
            return "Step id '\(id.prefix(80))' is not allowed: use 1 to 64 letters, digits, '_', '-' or '.' (such as s1, fetch-data)."
        }
        if ActivityKey.reservedStepIDs.contains(id.lowercased()) {
            return "Step id '\(id)' is reserved by Troupe; choose another (such as s1)."
        }
        return nil
    }

    /// A dependency cycle, as the ids along it, or `nil`.
    static func findCycle(_ plan: Plan) -> [String]? {
        let edges = Dictionary(plan.steps.map { ($0.id, $0.dependsOn) }, uniquingKeysWith: { first, _ in first })
        var state: [String: Int] = [:]  // 1 = on the current path, 2 = done
        var path: [String] = []

        func visit(_ id: String) -> [String]? {
            if state[id] == 2 { return nil }
            if state[id] == 1 {
                let start = path.firstIndex(of: id) ?? 0
                return Array(path[start...]) + [id]
            }
            state[id] = 1
            path.append(id)
            for next in edges[id] ?? [] where edges[next] != nil && next != id {
                if let cycle = visit(next) { return cycle }
            }
            path.removeLast()
            state[id] = 2
            return nil
        }

        for step in plan.steps {
            if let cycle = visit(step.id) { return cycle }
        }
        return nil
    }

    /// The JSON object in a model's text: the whole text, a fenced block, or the outermost braces.
    public static func extractJSON(from text: String) -> String? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("{") { return trimmed }
        if let fence = trimmed.range(of: "```") {
            var rest = trimmed[fence.upperBound...]
            if let newline = rest.firstIndex(of: "\n") { rest = rest[rest.index(after: newline)...] }
            if let close = rest.range(of: "```") {
                let body = rest[..<close.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines)
                if body.hasPrefix("{") { return body }
            }
        }
        guard let open = trimmed.firstIndex(of: "{"), let close = trimmed.lastIndex(of: "}"), open < close else { return nil }
        return String(trimmed[open...close])
    }
}

/// Why a plan was rejected, one line per problem, worded for the model to fix.
public struct PlanProblems: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    public var problems: [String]
    public init(_ problems: [String]) { self.problems = problems }
    public var description: String { problems.joined(separator: "\n") }
}
