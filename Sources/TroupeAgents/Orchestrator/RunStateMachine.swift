public import Foundation
public import TroupeCore

/// Decides what a run does next. Pure: no I/O, no clocks, no randomness — a fold of the journal.
///
/// Feed it every event in order with ``apply(_:at:)``; ask ``nextActions()`` what to do. The same
/// journal always yields the same state and the same actions, which is what makes resume exact.
public struct RunStateMachine: Sendable {
    public private(set) var runID: RunID
    public private(set) var goal = ""
    public private(set) var configuration = RunConfiguration()
    public private(set) var status: RunStatus = .pending
    public private(set) var sequence = 0
    public private(set) var createdAt: Date?
    /// When the current driver took the run (its last `leaseAcquired`).
    public private(set) var drivenSince: Date?

    /// The current plan's steps in order, including finished steps of earlier rounds.
    public private(set) var steps: [StepState] = []
    /// 0 for the first plan, then one more per replan.
    public private(set) var planRound = 0
    /// The planner's answers in the current round.
    public private(set) var plannerTurns: [PlannerTurn] = []
    public private(set) var plannerFailures = 0
    /// Why the current round replans, once a step has failed.
    public private(set) var replanReason: String?
    public private(set) var activities: [ActivityKey: ActivityRecord] = [:]
    public private(set) var usage = Usage.zero
    public private(set) var answer: String?
    public private(set) var error: TroupeError?
    /// The orphaned side-effecting activity that parked the run, if any.
    public private(set) var attentionKey: ActivityKey?
    /// Tool calls that needed a person's decision, by key: requested, and decided or not.
    public private(set) var approvals: [ActivityKey: ApprovalState] = [:]

    /// Whether the run stands still for a person: it waits for approval and no activity is
    /// under way (or left unfinished) — what a follower stops at.
    public var isIdleWaitingForApproval: Bool {
        status == .waitingForApproval && !activities.values.contains { $0.status == .started }
    }

    /// The approval requests no one has decided on yet, in key order.
    public var pendingApprovals: [ApprovalState] {
        approvals.values.filter { $0.decision == nil }.sorted { $0.key < $1.key }
    }

    /// Activities started by a driver that has since been replaced without finishing them, not yet settled.
    private var orphans: Set<ActivityKey> = []
    /// Orphans an operator said to run again, not yet started again: a later driver runs them
    /// instead of asking again (the decision stands until the call is under way once more).
    private var retryApproved: Set<ActivityKey> = []
    /// Model calls of steps started and not yet finished, by step: one at a time each.
    private var outstandingModelCalls: [String: ActivityKey] = [:]
    /// The planner's model call started and not yet finished.
    private var outstandingPlannerCall: ActivityKey?
    private var planAccepted = false
    private var nextPlannerCallIndex = 0
    private var plannerFatalError: TroupeError?

    public init(runID: RunID) {
        self.runID = runID
    }

    /// Folds a whole journal.
    public init(runID: RunID, replaying records: [RunEventRecord]) throws(TroupeError) {
        self.init(runID: runID)
        for record in records {
            try apply(record.event, at: record.recordedAt)
        }
    }

    /// The round the planner works on: the current one, or the next once a step has failed.
    public var planningRound: Int { replanReason != nil ? planRound + 1 : planRound }

    /// The step called `id` in the current plan (a replan may reuse the id of a failed step).
    public func step(_ id: String) -> StepState? { steps.last { $0.step.id == id } }

    // MARK: - Applying events

    /// Advances the state by one journaled event.
    public mutating func apply(_ event: RunEvent, at time: Date) throws(TroupeError) {
        if sequence == 0 {
            guard case .runCreated = event else { throw invalid("a journal must begin with runCreated, not \(event.type)") }
        }
        if status.isTerminal {
            switch event {
            case .activityCompleted, .activityFailed, .modelCallRetried, .leaseAcquired: break
            default: throw invalid("run is already \(status.rawValue); \(event.type) is not allowed")
            }
        }
        sequence += 1
        switch event {
        case .runCreated(let goal, let configuration):
            guard sequence == 1 else { throw invalid("runCreated may only be the first event") }
            self.goal = goal
            self.configuration = configuration
            self.createdAt = time

        case .leaseAcquired:
            if status == .pending { status = .running }
            drivenSince = time
            // Whatever the previous driver started and did not finish will never finish by itself.
            for (key, record) in activities where record.status == .started && !retryApproved.contains(key) {
                orphans.insert(key)
            }

        case .configurationUpdated(let configuration):
            self.configuration = configuration

        case .activityStarted(let key, let kind):
            if let existing = activities[key], existing.status != .started {
                throw invalid("activity \(key) already finished; it cannot start again")
            }
            activities[key] = ActivityRecord(key: key, kind: kind, status: .started, startedAt: time)
            orphans.remove(key)
            retryApproved.remove(key)
            if kind.isPlannerCall {
                outstandingPlannerCall = key
            } else if case .model = kind {
                outstandingModelCalls[key.step] = key
            }
            reserve(key, kind: kind)

        case .activityCompleted(let key, let result):
            try complete(key, with: result, at: time)

        case .activityFailed(let key, let error):
            try fail(key, with: error, at: time)

        case .modelCallRetried(let key, let attempt, let error, let delay):
            guard let record = activities[key], case .model = record.kind else { throw invalid("no model call \(key) to retry") }
            activities[key]?.retries.append(ModelAttempt(number: attempt, error: error, retryDelaySeconds: delay))

        case .planProposed(let round, let plan), .replanned(let round, let plan, _):
            guard round == planningRound else { throw invalid("plan for round \(round) while planning round \(planningRound)") }
            planRound = round
            adopt(plan)

        case .planRejected(let round, _, let problems):
            guard round == planningRound, !plannerTurns.isEmpty else { throw invalid("planRejected without a planner answer") }
            plannerTurns[plannerTurns.count - 1].problems = problems

        case .stepStarted(let stepID, let attempt):
            let index = try stepIndex(stepID)
            guard steps[index].status == .pending else {
                throw invalid("step \(stepID) is \(steps[index].status.rawValue) and cannot start")
            }
            steps[index].status = .running
            steps[index].attempt = attempt
            steps[index].transcript = []
            steps[index].startedAt = time
            steps[index].modelFailures = 0
            steps[index].iterations = 0
            steps[index].nextCallIndex = 0
            steps[index].fatalError = nil

        case .stepCompleted(let stepID, let output):
            let index = try stepIndex(stepID)
            steps[index].status = .succeeded
            steps[index].output = output
            steps[index].finishedAt = time

        case .stepFailed(let stepID, let error):
            let index = try stepIndex(stepID)
            steps[index].status = .failed
            steps[index].error = error
            steps[index].finishedAt = time
            if replanReason == nil {
                nextPlannerCallIndex = 0
                replanReason = "Step '\(stepID)' (\(steps[index].step.title)) failed: \(error.message)"
            }

        case .runNeedsAttention(let key, _):
            status = .needsAttention
            attentionKey = key

        case .approvalRequested(let key, let request):
            guard approvals[key] == nil else { throw invalid("approval for \(key) was already requested") }
            guard activities[key] == nil else { throw invalid("activity \(key) started before its approval was requested") }
            approvals[key] = ApprovalState(key: key, request: request, requestedAt: time)
            reserve(key, kind: .tool(name: request.call.name, callID: request.call.id, effect: request.effect))
            if status == .pending || status == .running { status = .waitingForApproval }

        case .approvalDecided(let key, let decision):
            guard let state = approvals[key] else { throw invalid("no approval request \(key) to decide") }
            guard state.decision == nil else { throw invalid("approval \(key) was already decided") }
            approvals[key]?.decision = decision
            approvals[key]?.decidedAt = time
            if status == .waitingForApproval && pendingApprovals.isEmpty { status = .running }
            if decision.verdict == .deny {
                // The call never runs: the model reads the denial as its result.
                let call = state.request.call
                activities[key] = ActivityRecord(
                    key: key, kind: .tool(name: call.name, callID: call.id, effect: state.request.effect), status: .started, startedAt: time
                )
                try complete(key, with: .tool(decision.denialOutput(of: call)), at: time)
            }

        case .attentionResolved(let key, let resolution):
            guard activities[key] != nil else { throw invalid("no activity \(key) to resolve") }
            status = pendingApprovals.isEmpty ? .running : .waitingForApproval
            attentionKey = nil
            switch resolution {
            case .retry:
                orphans.remove(key)
                retryApproved.insert(key)
            case .skip:
                let output = ToolOutput.error(
                    "An operator skipped this call after the process running it stopped; whether it took effect is unknown."
                )
                try complete(key, with: .tool(output), at: time)
            }

        case .runCancelled(let reason):
            status = .cancelled
            error = TroupeError(.cancelled, reason)

        case .runSucceeded(let answer):
            status = .succeeded
            self.answer = answer

        case .runFailed(let error):
            status = .failed
            self.error = error
        }
    }

    private mutating func reserve(_ key: ActivityKey, kind: ActivityKind) {
        if kind.isPlannerCall {
            nextPlannerCallIndex = max(nextPlannerCallIndex, key.callIndex + 1)
        } else if let index = steps.lastIndex(where: { $0.step.id == key.step }), steps[index].attempt == key.attempt {
            steps[index].nextCallIndex = max(steps[index].nextCallIndex, key.callIndex + 1)
        }
    }

    /// Marks a started activity finished; returns its updated record.
    private mutating func settle(
        _ key: ActivityKey,
        at time: Date,
        _ update: (inout ActivityRecord) -> Void
    ) throws(TroupeError) -> ActivityRecord {
        guard var record = activities[key] else { throw invalid("activity \(key) finished without being started") }
        guard record.status != .completed else { throw invalid("activity \(key) finished twice") }
        update(&record)
        record.finishedAt = time
        activities[key] = record
        orphans.remove(key)
        retryApproved.remove(key)
        if outstandingPlannerCall == key { outstandingPlannerCall = nil }
        if outstandingModelCalls[key.step] == key { outstandingModelCalls[key.step] = nil }
        return record
    }

    private mutating func complete(_ key: ActivityKey, with result: ActivityResult, at time: Date) throws(TroupeError) {
        let record = try settle(key, at: time) { record in
            record.status = .completed
            record.result = result
        }
        if case .model(let response) = result { usage += response.usage }
        guard !status.isTerminal else { return }

        if record.kind.isPlannerCall {
            guard key.attempt == planningRound, case .model(let response) = result else { return }
            plannerTurns.append(PlannerTurn(response: response, problems: nil))
            return
        }
        guard let index = steps.lastIndex(where: { $0.step.id == key.step }),
            steps[index].status == .running, steps[index].attempt == key.attempt
        else { return }  // a late result for a step that has moved on
        switch (result, record.kind) {
        case (.model(let response), _):
            steps[index].iterations += 1
            steps[index].transcript.append(.assistant(key: key, response: response))
            // Tool calls take the call indexes right after the model call that asked for them.
            steps[index].nextCallIndex = max(steps[index].nextCallIndex, key.callIndex + 1 + response.message.toolCalls.count)
            if response.finishReason == .contentFilter {
                steps[index].fatalError = TroupeError(.contentFiltered, "The provider's content filter stopped the model's answer.")
            }
        case (.tool(let output), .tool(let name, let callID, _)):
            let call = toolCall(for: key, in: steps[index]) ?? ToolCall(id: callID, name: name, arguments: "")
            steps[index].transcript.append(.toolResult(key: key, call: call, output: output))
        case (.tool, .model):
            throw invalid("activity \(key) is a model call but completed with a tool result")
        }
    }

    private mutating func fail(_ key: ActivityKey, with error: TroupeError, at time: Date) throws(TroupeError) {
        let record = try settle(key, at: time) { record in
            record.status = .failed
            record.error = error
        }
        guard !status.isTerminal else { return }

        if record.kind.isPlannerCall {
            guard key.attempt == planningRound else { return }
            plannerFailures += 1
            if !Self.isRetryable(error) || plannerFailures > configuration.maxModelCallFailures {
                plannerFatalError = error
            }
            return
        }
        guard let index = steps.lastIndex(where: { $0.step.id == key.step }),
            steps[index].status == .running, steps[index].attempt == key.attempt
        else { return }
        switch record.kind {
        case .model:
            steps[index].modelFailures += 1
            if !Self.isRetryable(error) || steps[index].modelFailures > configuration.maxModelCallFailures {
                steps[index].fatalError = error
            }
        case .tool(let name, let callID, _):
            if error.code == .stepTimeout || error.code == .cancelled {
                steps[index].fatalError = error
            } else {
                let call = toolCall(for: key, in: steps[index]) ?? ToolCall(id: callID, name: name, arguments: "")
                steps[index].transcript.append(.toolResult(key: key, call: call, output: .error(error.message)))
            }
        }
    }

    /// Model-call failures worth another attempt: the network, the provider's load, odd output.
    static func isRetryable(_ error: TroupeError) -> Bool {
        [.transport, .timeout, .rateLimited, .modelAPI, .malformedModelResponse, .invalidJSON].contains(error.code)
    }

    private mutating func adopt(_ plan: Plan) {
        planAccepted = true
        // Finished steps stay (succeeded or failed, as history); unfinished ones are replaced by the new plan's.
        steps = steps.map { state in
            var state = state
            if state.status == .pending || state.status == .running { state.status = .superseded }
            return state
        }
        for step in plan.steps {
            var state = StepState(step: step)
            // A replan may reuse a failed step's id: continue its attempt numbers so activity keys stay unique.
            state.attempt = steps.filter { $0.step.id == step.id }.map(\.attempt).max() ?? 0
            steps.append(state)
        }
        replanReason = nil
        plannerTurns = []
        plannerFailures = 0
        plannerFatalError = nil
        nextPlannerCallIndex = 0
    }

    private func toolCall(for key: ActivityKey, in step: StepState) -> ToolCall? {
        for item in step.transcript.reversed() {
            guard case .assistant(let modelKey, let response) = item else { continue }
            let offset = key.callIndex - modelKey.callIndex - 1
            if modelKey.attempt == key.attempt, offset >= 0, offset < response.message.toolCalls.count {
                return response.message.toolCalls[offset]
            }
        }
        return nil
    }

    private func stepIndex(_ id: String) throws(TroupeError) -> Int {
        guard let index = steps.lastIndex(where: { $0.step.id == id && $0.status != .superseded }) else {
            throw invalid("no step '\(id)' in the plan")
        }
        return index
    }

    private func invalid(_ message: String) -> TroupeError {
        TroupeError(.invalidTransition, "Journal of run \(runID) is inconsistent: \(message).")
    }
}

// MARK: - Deciding

extension RunStateMachine {
    /// What to do next, derived from the state alone. Empty when the run is finished, parked, or
    /// waiting for activities that are under way.
    public func nextActions() -> [RunAction] {
        // A run waiting for a person's decision still does whatever does not depend on it.
        guard status == .pending || status == .running || status == .waitingForApproval else { return [] }
        if let orphan = orphanedSideEffect() {
            let reason =
                "Tool '\(orphan.name)' (\(orphan.key)) was running when the process driving the run stopped; "
                + "it has side effects, so Troupe will not run it again by itself. Check whether it took effect, then "
                + "`troupe resume \(runID) --retry` or `--skip`."
            return [.record(.runNeedsAttention(key: orphan.key, reason: reason))]
        }
        // A call that waits for a decision whose step ended meanwhile (failed, timed out, replaced
        // by a replan) will never run: it is settled, so the run no longer waits on it.
        let stale = pendingApprovals.filter { approval in
            guard let step = steps.last(where: { $0.step.id == approval.key.step }) else { return true }
            return !(step.status == .running && step.attempt == approval.key.attempt)
        }
        if !stale.isEmpty {
            return stale.map { approval in
                .record(
                    .approvalDecided(
                        key: approval.key,
                        decision: ApprovalDecision(
                            verdict: .deny, reason: "Its step ended before anyone decided, so it was not run.",
                            decidedBy: ApprovalDecision.systemDecider)))
            }
        }
        if !planAccepted || (replanReason != nil && !steps.contains { $0.status == .running }) {
            return planningActions()
        }
        var actions: [RunAction] = []
        var running = 0
        for state in steps where state.status == .running {
            running += 1
            actions += stepActions(state)
        }
        if replanReason != nil { return actions }

        let succeeded = Set(steps.filter { $0.status == .succeeded }.map(\.step.id))
        for state in steps where state.status == .pending && running < configuration.maxConcurrentSteps {
            if state.step.dependsOn.allSatisfy(succeeded.contains) {
                actions.append(.record(.stepStarted(stepID: state.step.id, attempt: state.attempt + 1)))
                running += 1
            }
        }
        if actions.isEmpty, running == 0, !steps.contains(where: { $0.status == .pending }) {
            actions.append(.record(.runSucceeded(answer: finalAnswer())))
        }
        return actions
    }

    private func planningActions() -> [RunAction] {
        if let plannerFatalError {
            return [.record(.runFailed(error: TroupeError(.planInvalid, "The planner's model call failed: \(plannerFatalError.message)")))]
        }
        let rejections = plannerTurns.filter { $0.problems != nil }.count
        if let last = plannerTurns.last, last.problems == nil {
            return []  // an answer awaiting its verdict; the driver records both together
        }
        if rejections > configuration.maxPlanRepairs {
            let problems = plannerTurns.last?.problems?.joined(separator: " ") ?? ""
            return [
                .record(
                    .runFailed(
                        error: TroupeError(
                            .planInvalid,
                            "The model did not produce a valid plan after \(rejections) attempts. Last problems: \(problems)"
                        )
                    )
                )
            ]
        }
        if replanReason != nil, planRound >= configuration.maxReplans {
            let failed = steps.last { $0.status == .failed }
            let message = failed.map { "Step '\($0.step.id)' failed and no replans are left: \($0.error?.message ?? "unknown error")" }
            return [.record(.runFailed(error: TroupeError(.stepFailed, message ?? "A step failed and no replans are left.")))]
        }
        let round = planningRound
        if let outstanding = outstandingPlannerCall, outstanding.attempt == round {
            // Under way (or orphaned by a crash, then run again under the same key).
            return [.callModel(key: outstanding, purpose: round == 0 ? .plan : .replan, stepID: nil)]
        }
        let key = ActivityKey(step: ActivityKey.planStep, attempt: round, callIndex: nextPlannerCallIndex)
        return [.callModel(key: key, purpose: round == 0 ? .plan : .replan, stepID: nil)]
    }

    private func stepActions(_ state: StepState) -> [RunAction] {
        let id = state.step.id
        if let fatal = state.fatalError {
            return [.record(.stepFailed(stepID: id, error: fatal))]
        }
        guard let lastModel = state.transcript.lastIndex(where: { if case .assistant = $0 { true } else { false } }),
            case .assistant(let modelKey, let response) = state.transcript[lastModel]
        else {
            return [modelCall(for: state)]
        }
        let calls = response.message.toolCalls
        if calls.isEmpty {
            return [.record(.stepCompleted(stepID: id, output: response.message.content ?? ""))]
        }
        let answered = Set(
            state.transcript[lastModel...].compactMap { item -> ActivityKey? in
                if case .toolResult(let key, _, _) = item { key } else { nil }
            })
        var actions: [RunAction] = []
        var undecided = false
        for (offset, call) in calls.enumerated() {
            let key = ActivityKey(step: id, attempt: modelKey.attempt, callIndex: modelKey.callIndex + 1 + offset)
            guard !answered.contains(key) else { continue }
            if let approval = approvals[key] {
                // Requested: runs once decided, as decided (a denial is already its answer).
                if let approved = approval.approvedCall {
                    actions.append(.callTool(key: key, stepID: id, call: approved))
                } else {
                    undecided = true
                }
            } else {
                actions.append(.callTool(key: key, stepID: id, call: call))
            }
        }
        if !actions.isEmpty || undecided { return actions }
        if state.iterations > configuration.maxIterations {
            // The tool-free final call still asked for tools: take what text it gave.
            return [.record(.stepCompleted(stepID: id, output: response.message.content ?? ""))]
        }
        return [modelCall(for: state)]
    }

    private func modelCall(for state: StepState) -> RunAction {
        let purpose: ModelCallPurpose = state.iterations >= configuration.maxIterations ? .finalAnswer : .execute
        if let outstanding = outstandingModelCalls[state.step.id], outstanding.attempt == state.attempt {
            // Under way (or orphaned by a crash, then run again under the same key).
            return .callModel(key: outstanding, purpose: purpose, stepID: state.step.id)
        }
        let key = ActivityKey(step: state.step.id, attempt: state.attempt, callIndex: state.nextCallIndex)
        return .callModel(key: key, purpose: purpose, stepID: state.step.id)
    }

    private func orphanedSideEffect() -> (key: ActivityKey, name: String)? {
        for key in orphans.sorted() {
            if let record = activities[key], case .tool(let name, _, .sideEffecting) = record.kind { return (key, name) }
        }
        return nil
    }

    /// The run's answer: the outputs of the steps nothing else depends on, in plan order.
    func finalAnswer() -> String {
        let live = steps.filter { $0.status == .succeeded }
        let dependedOn = Set(live.flatMap(\.step.dependsOn))
        let sinks = live.filter { !dependedOn.contains($0.step.id) }
        if sinks.count == 1 { return sinks[0].output ?? "" }
        return sinks.map { "## \($0.step.title)\n\($0.output ?? "")" }.joined(separator: "\n\n")
    }
}
