public import Foundation
public import TroupeCore

/// A run as one JSON document: what `troupe show --json` prints and the API answers (a public
/// contract); decodable, so that the CLI reads a remote server's runs into the same type.
///
/// Fields: `id`, `tenant`, `status`, `goal`, `createdAt`, `updatedAt`, `usage`, `modelCalls`, `toolCalls`,
/// `answer`, `error`, `configuration`, and `steps` — each with its tool calls, arguments and
/// results inline.
public struct RunReport: Sendable, Codable {
    /// Token counts, with their total.
    public struct UsageReport: Sendable, Codable {
        public var inputTokens: Int
        public var outputTokens: Int
        public var cachedTokens: Int
        public var totalTokens: Int

        init(_ usage: Usage) {
            inputTokens = usage.inputTokens
            outputTokens = usage.outputTokens
            cachedTokens = usage.cachedTokens
            totalTokens = usage.totalTokens
        }
    }

    /// An error's stable code and message.
    /// What a run's (or a step's) model calls cost, by the price table (``PriceTable``).
    public struct CostReport: Sendable, Codable {
        /// The priced calls' cost in US dollars, exact (a decimal number as text: `"0.012345"`).
        public var usd: String
        /// Model calls whose model has no price: their tokens are not in ``usd``.
        public var unpricedModelCalls: Int
        /// By the model that answered (as the provider named it), in name order.
        public var byModel: [ModelCost]
        /// The price table used (its source and date).
        public var prices: String

        public struct ModelCost: Sendable, Codable {
            public var model: String
            public var modelCalls: Int
            public var usage: UsageReport
            /// `nil` when the model is unpriced.
            public var usd: String?
        }

        /// The cost of the model answers among `records`.
        init(_ records: [ActivityRecord], defaultModel: String, prices: PriceTable) {
            // Each call priced on its own, then added up: the same sums as `troupe usage`.
            var byModel: [String: (calls: Int, usage: Usage, cost: Decimal?)] = [:]
            for record in records {
                guard case .model(let response)? = record.result else { continue }
                let model = response.model.isEmpty ? defaultModel : response.model
                let cost = prices.cost(of: response.usage, model: model)
                var tally = byModel[model] ?? (0, .zero, cost.map { _ in Decimal(0) })
                tally.calls += 1
                tally.usage += response.usage
                if let cost { tally.cost = (tally.cost ?? 0) + cost }
                byModel[model] = tally
            }
            var total = Decimal(0)
            var unpriced = 0
            self.byModel = byModel.sorted { $0.key < $1.key }.map { model, tally in
                if let cost = tally.cost { total += cost } else { unpriced += tally.calls }
                return ModelCost(model: model, modelCalls: tally.calls, usage: UsageReport(tally.usage), usd: tally.cost.map(Self.text))
            }
            usd = Self.text(total)
            unpricedModelCalls = unpriced
            self.prices = prices.source
        }

        /// A dollar amount as exact decimal text.
        static func text(_ amount: Decimal) -> String {
            var amount = amount
            var rounded = Decimal()
            NSDecimalRound(&rounded, &amount, 12, .plain)
            return "\(rounded)"
        }
    }

    public struct ErrorReport: Sendable, Codable {
        public var code: String
        public var message: String
    }

    /// One tool call of a step, with what it was asked and what it returned.
    public struct ToolCallReport: Sendable, Codable {
        public var key: String
        public var id: String
        public var name: String
        /// The arguments as JSON when the model sent valid JSON, else as the raw text.
        public var arguments: JSONValue
        public var result: String?
        public var isError: Bool?
        /// `completed`, `failed`, or `started` (in flight, or orphaned by a crash).
        public var status: String
    }

    /// A tool call that needed a person's decision: the request and, once made, the decision.
    /// Also the entries of `GET /v1/approvals` and `troupe approvals --json`.
    public struct ApprovalReport: Sendable, Codable {
        public var runId: String
        public var tenant: String
        /// The run's goal, so that a person sees what the call serves.
        public var goal: String
        /// The call's key as `POST /v1/runs/{id}/approvals/{callKey}` and `troupe approve --call` take it (`s1:1:2`).
        public var callKey: String
        public var step: String
        public var tool: String
        public var callId: String
        /// The arguments as the model sent them: JSON when valid, else the raw text.
        public var arguments: JSONValue
        /// `readOnly`, `idempotent` or `sideEffecting`.
        public var effect: String
        /// `pending`, `approved`, `edited` or `denied`.
        public var status: String
        public var requestedAt: Date
        /// When the default decision (`onTimeout`) applies if no one decides.
        public var expiresAt: Date?
        public var onTimeout: String?
        /// Who decided: an API key's ID, `cli:USER@HOST`, or `timeout`.
        public var decidedBy: String?
        public var decidedAt: Date?
        /// For an edit: the arguments the call ran with.
        public var editedArguments: JSONValue?
        /// For a denial: the reason the model was given.
        public var reason: String?

        public init(_ state: ApprovalState, of machine: RunStateMachine) {
            runId = machine.runID.rawValue
            tenant = machine.configuration.owningTenant
            goal = machine.goal
            callKey = state.key.callKey
            step = state.key.step
            tool = state.request.call.name
            callId = state.request.call.id
            arguments = RunReport.arguments(state.request.call.arguments)
            effect = state.request.effect.rawValue
            status =
                switch state.decision?.verdict {
                case nil: "pending"
                case .approve: "approved"
                case .edit: "edited"
                case .deny: "denied"
                }
            requestedAt = state.requestedAt
            expiresAt = state.request.expiresAt
            onTimeout = state.request.onTimeout?.rawValue
            decidedBy = state.decision?.decidedBy
            decidedAt = state.decidedAt
            editedArguments = state.decision?.arguments.map(RunReport.arguments)
            reason = state.decision?.reason
        }
    }

    /// One step of the plan, with its outcome and its tool calls.
    public struct StepReport: Sendable, Codable {
        public var id: String
        public var title: String
        public var instruction: String
        public var tools: [String]
        public var dependsOn: [String]
        public var status: String
        public var attempt: Int
        public var output: String?
        public var error: ErrorReport?
        public var startedAt: Date?
        public var finishedAt: Date?
        public var modelCalls: Int
        public var usage: UsageReport
        public var toolCalls: [ToolCallReport]
        /// Model calls of this step that failed (`key: code: message`), oldest first.
        public var modelErrors: [String]
        /// Model-call attempts that failed and were retried, oldest first.
        public var modelRetries: [String]
        /// What this attempt's model calls cost (absent in documents before costs).
        public var cost: CostReport?
    }

    public var id: String
    /// The tenant the run belongs to (absent in documents of servers before tenants).
    public var tenant: String?
    public var status: String
    public var goal: String
    public var createdAt: Date
    public var updatedAt: Date
    public var usage: UsageReport
    public var modelCalls: Int
    public var toolCalls: Int
    public var answer: String?
    public var error: ErrorReport?
    public var configuration: RunConfiguration
    public var planRound: Int
    /// Planner model calls that failed (`key: code: message`), oldest first.
    public var planningErrors: [String]
    /// Planner-call attempts that failed and were retried, oldest first.
    public var planningRetries: [String]
    public var events: Int
    public var steps: [StepReport]
    /// The run's tool calls that needed a person's decision, in key order (absent in documents
    /// of servers before approvals, and in listings).
    public var approvals: [ApprovalReport]?
    /// What the run's model calls cost, planner calls included (absent in listings and in
    /// documents before costs).
    public var cost: CostReport?

    /// A list entry: the summary fields only (`troupe runs --json`).
    public static func summary(_ summary: RunSummary) -> RunReport {
        RunReport(summary: summary, machine: nil)
    }

    /// Arguments as JSON when they are valid JSON, else as the raw text.
    static func arguments(_ text: String) -> JSONValue {
        (try? JSONValue.parse(text)) ?? .string(text)
    }

    /// The whole report of a run from its summary and its folded journal, its costs by `prices`.
    public init(summary: RunSummary, machine: RunStateMachine?, prices: PriceTable = .builtIn) {
        id = summary.id.rawValue
        tenant = summary.configuration.owningTenant
        status = summary.status.rawValue
        goal = summary.goal
        createdAt = summary.createdAt
        updatedAt = summary.updatedAt
        usage = UsageReport(summary.usage)
        modelCalls = summary.modelCalls
        toolCalls = summary.toolCalls
        answer = summary.answer
        error = summary.error.map { ErrorReport(code: $0.code.rawValue, message: $0.message) }
        configuration = summary.configuration
        planRound = machine?.planRound ?? 0
        let activities = machine.map { Array($0.activities.values) } ?? []
        planningErrors = activities.filter { $0.kind.isPlannerCall && $0.error != nil }
            .sorted { $0.key < $1.key }
            .map { "\($0.key): \($0.error?.code.rawValue ?? ""): \($0.error?.message ?? "")" }
        planningRetries = Self.retries(of: activities.filter(\.kind.isPlannerCall))
        events = summary.lastSequence
        steps = machine.map { Self.steps($0, defaultModel: summary.configuration.model, prices: prices) } ?? []
        cost = machine.map { CostReport(Array($0.activities.values), defaultModel: summary.configuration.model, prices: prices) }
        approvals = machine.map { machine in
            machine.approvals.values.sorted { $0.key < $1.key }.map { ApprovalReport($0, of: machine) }
        }
    }

    /// "key: attempt N: code: message; retried after S s" for each retried attempt of the calls,
    /// "key: code: message; fell back to MODEL" for each fallback.
    private static func retries(of records: [ActivityRecord]) -> [String] {
        records.sorted { $0.key < $1.key }.flatMap { record in
            record.retries.map { "\(record.key): \($0.summary())" }
        }
    }

    private static func steps(_ machine: RunStateMachine, defaultModel: String, prices: PriceTable) -> [StepReport] {
        let byStep = Dictionary(grouping: machine.activities.values, by: \.key.step)
        return machine.steps.map { state in
            // A replan may reuse a failed step's id; each step state owns one attempt's activities.
            let records = (byStep[state.step.id] ?? []).filter { $0.key.attempt == state.attempt }.sorted { $0.key < $1.key }
            var calls: [ToolCallReport] = []
            var stepUsage = Usage.zero
            var modelCalls = 0
            var modelErrors: [String] = []
            let modelRetries = retries(of: records)
            var requested: [ActivityKey: ToolCall] = [:]
            for record in records {
                if case .model = record.kind, let error = record.error {
                    modelErrors.append("\(record.key): \(error.code): \(error.message)")
                }
                if case .model(let response)? = record.result {
                    stepUsage += response.usage
                    modelCalls += 1
                    for (offset, call) in response.message.toolCalls.enumerated() {
                        requested[
                            ActivityKey(step: record.key.step, attempt: record.key.attempt, callIndex: record.key.callIndex + 1 + offset)] =
                            call
                    }
                }
            }
            for record in records {
                guard case .tool(let name, let callID, _) = record.kind else { continue }
                let call = requested[record.key] ?? ToolCall(id: callID, name: name, arguments: "")
                var result: String?
                var isError: Bool?
                if case .tool(let output)? = record.result {
                    result = output.content
                    isError = output.isError
                } else if let error = record.error {
                    result = error.message
                    isError = true
                }
                calls.append(
                    ToolCallReport(
                        key: record.key.description,
                        id: call.id,
                        name: call.name,
                        arguments: arguments(call.arguments),
                        result: result,
                        isError: isError,
                        status: record.status.rawValue
                    )
                )
            }
            return StepReport(
                id: state.step.id,
                title: state.step.title,
                instruction: state.step.instruction,
                tools: state.step.tools,
                dependsOn: state.step.dependsOn,
                status: state.status.rawValue,
                attempt: state.attempt,
                output: state.output,
                error: state.error.map { ErrorReport(code: $0.code.rawValue, message: $0.message) },
                startedAt: state.startedAt,
                finishedAt: state.finishedAt,
                modelCalls: modelCalls,
                usage: UsageReport(stepUsage),
                toolCalls: calls,
                modelErrors: modelErrors,
                modelRetries: modelRetries,
                cost: CostReport(records, defaultModel: defaultModel, prices: prices)
            )
        }
    }

    /// Pretty-printed JSON with ISO-8601 dates and sorted keys.
    public func json() throws -> String {
        let encoder = JSONCoding.encoder()
        encoder.outputFormatting.insert(.prettyPrinted)
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// Several reports as one JSON array.
    public static func json(_ reports: [RunReport]) throws -> String {
        let encoder = JSONCoding.encoder()
        encoder.outputFormatting.insert(.prettyPrinted)
        return String(decoding: try encoder.encode(reports), as: UTF8.self)
    }
}
