public import Foundation
public import Logging
import Synchronization
public import TroupeCore
public import TroupeStore

/// Drives a run: folds its journal, performs the actions the ``RunStateMachine`` asks for, and
/// journals their outcomes. The only part of the orchestrator that touches the world.
///
/// Every activity is journaled as started before it runs and as completed after, in batched
/// appends (one commit carries an activity's result, the decisions that follow from it, and the
/// start of the next activities). The driver holds the run's lease while it works and renews it;
/// its appends are fenced by the lease's token, so once another driver took the run it writes
/// nothing more, and it starts no tool call that is not read-only without a third of its lease in
/// hand. It notices events appended by others (a cancellation) at each renewal.
public struct RunDriver: Sendable {
    public var store: any RunStore
    public var model: any ChatModel
    public var tools: ToolRegistry
    /// Who is driving, as recorded in the lease (``LeaseOwner`` for the CLI: `host/pid/nonce/instance`).
    public var owner: String
    /// How long a lease lasts without renewal; renewed every third of it.
    public var leaseDuration: Duration
    public var clock: any Clock<Duration>
    /// Wall time for journal timestamps and deadlines.
    public var now: @Sendable () -> Date
    public var logger: Logger
    /// Called after each event is durably journaled, with the state it led to.
    public var observer: (@Sendable (RunEvent, RunStateMachine) -> Void)?
    /// A graceful shutdown: once it begins, the driver launches no new activity, lets those in
    /// flight finish and journals them, then returns the run as it stands (not ended) so its
    /// lease is released clean and another driver continues it at once.
    public var drain: DrainSignal?

    /// The longest goal accepted, in bytes of UTF-8.
    public static let maxGoalBytes = 100_000

    public var planner = PlannerAgent()
    public var executor = ExecutorAgent()

    public init(
        store: any RunStore,
        model: any ChatModel,
        tools: ToolRegistry,
        owner: String = "troupe/\(ProcessInfo.processInfo.processIdentifier)/\(UUID().uuidString.prefix(8))",
        leaseDuration: Duration = .seconds(30),
        clock: any Clock<Duration> = ContinuousClock(),
        now: @escaping @Sendable () -> Date = { Date() },
        logger: Logger = Logger(label: "troupe.driver"),
        observer: (@Sendable (RunEvent, RunStateMachine) -> Void)? = nil
    ) {
        self.store = store
        self.model = model
        self.tools = tools
        self.owner = owner
        self.leaseDuration = leaseDuration
        self.clock = clock
        self.now = now
        self.logger = logger
        self.observer = observer
    }

    /// Creates a run for `goal` and drives it to the end. The run is created with this driver's
    /// lease already held (one commit), so no worker can claim it first.
    public func run(goal: String, configuration: RunConfiguration, id: RunID = .make()) async throws -> RunStateMachine {
        let goal = try Self.validatedGoal(goal)
        let configuration = try configuration.validated()
        let start = now()
        let created = try await LeaseKeeper.retrying(
            "create the run", until: { start.addingTimeInterval(leaseSeconds) }, clock: clock, now: now, logger: logger
        ) {
            try await store.createLeasedRun(
                id: id, goal: goal, configuration: configuration, owner: owner, until: now().addingTimeInterval(leaseSeconds), at: now())
        }
        return try await drive(created)
    }

    /// `goal` without surrounding blanks; an empty goal or one over ``maxGoalBytes`` is refused
    /// (`invalidInput`). What every way of creating a run checks first.
    public static func validatedGoal(_ goal: String) throws(TroupeError) -> String {
        let goal = goal.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !goal.isEmpty else { throw TroupeError(.invalidInput, "The goal is empty: say what the run should achieve.") }
        guard goal.utf8.count <= maxGoalBytes else {
            throw TroupeError(
                .invalidInput,
                "The goal has \(goal.utf8.count) bytes; at most \(maxGoalBytes) are accepted. Put large inputs in files in the workspace."
            )
        }
        return goal
    }

    /// Drives an existing run until it succeeds, fails, is cancelled, or needs attention.
    ///
    /// - Parameters:
    ///   - replacing: a lease of another driver to take over (its process is known to be dead);
    ///     taken only if it is still the run's current lease.
    ///   - resolution: how to settle the side-effecting call that parked the run in
    ///     `needsAttention` — that call only, the one an operator was shown. A run that is not
    ///     parked ignores it: if the drive parks it on a call, the operator decides on that one next.
    ///   - attentionKey: the parked call the operator was shown, if known: the resolution is
    ///     refused (`journalConflict`) if the run is now parked on another.
    ///   - configuration: a changed configuration to continue with (journaled), e.g. from `resume` flags.
    public func drive(
        _ id: RunID,
        replacing: Lease? = nil,
        resolution: AttentionResolution? = nil,
        attentionKey: ActivityKey? = nil,
        configuration: RunConfiguration? = nil
    ) async throws -> RunStateMachine {
        let configuration = try configuration?.validated()
        let start = now()
        let lease = try await LeaseKeeper.retrying(
            "take the lease", until: { start.addingTimeInterval(leaseSeconds) }, clock: clock, now: now, logger: logger
        ) {
            try await store.acquireLease(
                on: id, owner: owner, until: now().addingTimeInterval(leaseSeconds), replacing: replacing, at: now())
        }
        return try await drive(
            holding: lease, attempt: 1, resolution: resolution, attentionKey: attentionKey, configuration: configuration)
    }

    /// Drives a run whose lease the caller already holds (from ``RunStore/claimNextRun(owner:until:maxAttempts:at:)``,
    /// say), then releases the lease: `clean` when the drive ended as it should (or was
    /// cancelled: a shutdown), `failed` with a back-off by the claim's attempt when it threw.
    public func drive(
        _ leased: LeasedRun,
        resolution: AttentionResolution? = nil,
        configuration: RunConfiguration? = nil
    ) async throws -> RunStateMachine {
        try await drive(
            holding: leased.lease, attempt: leased.attempt, resolution: resolution, attentionKey: nil, configuration: configuration)
    }

    private func drive(
        holding lease: Lease,
        attempt: Int,
        resolution: AttentionResolution?,
        attentionKey: ActivityKey?,
        configuration: RunConfiguration?
    ) async throws -> RunStateMachine {
        let keeper = LeaseKeeper(lease: lease, store: store, duration: leaseSeconds, clock: clock, now: now, logger: logger)
        do {
            let machine = try await driveHoldingLease(
                keeper, resolution: resolution, attentionKey: attentionKey, configuration: configuration)
            try? await store.releaseLease(keeper.lease, outcome: .clean)
            return machine
        } catch {
            let cancelled = error is CancellationError || (error as? TroupeError)?.code == .cancelled
            let outcome: DriveOutcome = cancelled ? .clean : .failed(retryAt: ClaimBackoff.retryAt(attempt: attempt, after: now()))
            try? await store.releaseLease(keeper.lease, outcome: outcome)
            throw error
        }
    }

    private var leaseSeconds: TimeInterval {
        leaseDuration.seconds
    }

    private enum Message: Sendable {
        case activity(ActivityKey, [RunEvent])
        /// The in-process approver's answer on a call waiting for approval.
        case decision(ActivityKey, ToolApproval)
        case heartbeat
        /// The lease could not be kept before a side effect: the driver stops.
        case leaseLost(TroupeError)
        /// The process is shutting down: finish what is in flight, start nothing.
        case drain
    }

    private func driveHoldingLease(
        _ keeper: LeaseKeeper,
        resolution: AttentionResolution?,
        attentionKey: ActivityKey?,
        configuration: RunConfiguration?
    ) async throws -> RunStateMachine {
        let id = keeper.lease.runID
        let journal = Journal(id: id, owner: owner, keeper: keeper, now: now, observer: observer)
        try await keeper.retrying("read the journal") { _ in try await journal.load() }
        guard !journal.status.isTerminal else { return journal.machine }
        if let attentionKey, resolution != nil, journal.machine.status == .needsAttention, journal.machine.attentionKey != attentionKey {
            throw TroupeError(
                .journalConflict,
                "Run \(id) is now parked on \(journal.machine.attentionKey.map(String.init(describing:)) ?? "nothing"), not on "
                    + "\(attentionKey): look at that call before deciding on it (`troupe show \(id)`).")
        }
        guard try journal.stageOpening(owner: owner, configuration: configuration, resolution: resolution) else { return journal.machine }
        try await journal.flush()
        let configured = journal.machine.configuration
        guard configured.readOnly == true || configured.maxToolOutputCharacters != nil else {
            return try await loop(journal, keeper: keeper)
        }
        var restricted = self
        // A read-only run is offered (and may call) only the tools that only read.
        if configured.readOnly == true { restricted.tools = tools.readOnly() }
        if let most = configured.maxToolOutputCharacters {
            restricted.executor.maxToolOutputCharacters = min(executor.maxToolOutputCharacters, most)
        }
        return try await restricted.loop(journal, keeper: keeper)
    }

    private func loop(_ journal: Journal, keeper: LeaseKeeper) async throws -> RunStateMachine {
        let id = journal.id
        // Async functions keep their locals in per-task memory for as long as they run; the
        // decisions and preparations are synchronous calls so that a run waiting on its model
        // holds only this loop's few variables (which matters with thousands of runs in flight).
        return try await withThrowingTaskGroup(of: Message.self) { group in
            var inFlight: Set<ActivityKey> = []
            // Calls this driver put to its in-process approver: once each, and those it still weighs.
            var asked: Set<ActivityKey> = []
            var asking = 0
            group.addTask { [clock, leaseDuration] in
                try await clock.sleep(for: leaseDuration / 3)
                return .heartbeat
            }
            var draining = drain?.isDraining ?? false
            if let drain, !draining {
                group.addTask {
                    await drain.wait()
                    return .drain
                }
            }
            while true {
                // While draining, no decision is staged either: a decision may start an activity.
                if !draining { try journal.stageExpiredApprovals(at: now()) }
                let launches =
                    draining ? [] : try journal.stageDecisions(excluding: inFlight, kind: kind(of:), approval: approvalRequest(for:in:))
                do {
                    try await journal.flush()
                } catch let error as TroupeError where error.code == .journalConflict {
                    // Someone else wrote (a cancellation, an operator): fold their events and decide again.
                    logger.info("journal moved under us; reloading", metadata: ["run_id": "\(id)"])
                    try await keeper.retrying("read the journal") { _ in try await journal.reload() }
                    continue
                }
                if journal.status.isTerminal || journal.status == .needsAttention {
                    group.cancelAll()
                    return journal.machine
                }
                if draining && inFlight.isEmpty {
                    group.cancelAll()
                    logger.info("drained: handing the run back", metadata: ["run_id": "\(id)", "sequence": "\(journal.machine.sequence)"])
                    return journal.machine
                }
                for activity in prepare(launches, in: journal) {
                    inFlight.insert(activity.key)
                    group.addTask {
                        if activity.changesTheWorld {
                            // Never act on a lease this driver may have lost while it was paused.
                            do { try await keeper.ensure(margin: keeper.margin) } catch { return .leaseLost(TroupeError.wrap(error)) }
                        }
                        return .activity(activity.key, await perform(activity, of: id))
                    }
                }
                if !draining, let approver = tools.approver {
                    for approval in journal.machine.pendingApprovals where !asked.contains(approval.key) {
                        asked.insert(approval.key)
                        asking += 1
                        let context = toolContext(for: approval.key, in: journal.machine)
                        group.addTask { .decision(approval.key, await approver.review(approval.request, context: context)) }
                    }
                }
                if inFlight.isEmpty && asking == 0 {
                    if journal.status == .waitingForApproval {
                        // Only calls a person must decide on are left: hand the run back until they do.
                        group.cancelAll()
                        return journal.machine
                    }
                    // Nothing under way and nothing to do: only a bug in the machine gets here.
                    throw TroupeError(.internal, "Run \(id) is \(journal.status.rawValue) with nothing left to do.")
                }
                switch try await group.next() {
                case .activity(let key, let events):
                    inFlight.remove(key)
                    // A drive cancelled (a drain's timeout) journals nothing more: the call's
                    // "failure" is the cancellation itself, and the next driver settles the
                    // call from its start alone (a side effect parks the run, never repeats).
                    try Task.checkCancellation()
                    try journal.stageOutcome(events)
                case .decision(let key, let answer):
                    asking -= 1
                    if let decision = answer.decision(by: tools.approver?.identity ?? "approver"),
                        let state = journal.machine.approvals[key], state.decision == nil
                    {
                        do {
                            // Checked and trimmed as a decision through the API or `troupe approve` is.
                            try journal.stageOutcome([.approvalDecided(key: key, decision: try state.request.normalized(decision))])
                        } catch let error as TroupeError where error.code == .invalidInput {
                            logger.warning(
                                "the approver's edit was refused; the call keeps waiting", metadata: ["error": "\(error.message)"])
                        }
                    }
                case .leaseLost(let error):
                    throw error
                case .drain:
                    draining = true
                case .heartbeat:
                    try await keeper.renew()
                    if try await keeper.retrying("read the journal", { _ in try await journal.hasForeignEvents() }) {
                        try await journal.flush()
                        if journal.status.isTerminal {
                            group.cancelAll()
                            return journal.machine
                        }
                    }
                    group.addTask { [clock, leaseDuration] in
                        try await clock.sleep(for: leaseDuration / 3)
                        return .heartbeat
                    }
                case nil:
                    throw TroupeError(.internal, "The driver of run \(id) lost track of its activities.")
                }
            }
        }
    }

    /// The approval request for a call the model asked for, if its tool needs a person's decision
    /// (and the call could run at all: a tool the step may not use just gets its error).
    private func approvalRequest(for call: ToolCall, in step: StepState?) -> ApprovalRequest? {
        guard tools.policy.needsApproval(call.name), let tool = tools.tool(named: call.name) else { return nil }
        if let allowed = step?.step.tools, !allowed.isEmpty, !allowed.contains(call.name) { return nil }
        let limits = tools.policy.limits(for: call.name)
        guard let seconds = limits.approvalTimeoutSeconds else {
            return ApprovalRequest(call: call, effect: tool.effect, parameters: tool.parameters)
        }
        return ApprovalRequest(
            call: call, effect: tool.effect, parameters: tool.parameters, expiresAt: now().addingTimeInterval(seconds),
            onTimeout: limits.approvalTimeoutDecision ?? .deny)
    }

    private func kind(of action: RunAction) -> ActivityKind {
        switch action {
        case .callModel(_, let purpose, _): return .model(purpose: purpose)
        case .callTool(_, _, let call):
            return .tool(name: call.name, callID: call.id, effect: tools.tool(named: call.name)?.effect ?? .readOnly)
        case .record: return .model(purpose: .execute)
        }
    }

    /// When the step an action belongs to runs out of time (planner calls get one step timeout each).
    /// A step's time counts from its start or, after a resume, from when this driver took the run:
    /// time the run spent with no driver (a crash, a deploy) is not held against it.
    private func deadline(for action: RunAction, in machine: RunStateMachine) -> Date {
        let timeout = machine.configuration.stepTimeoutSeconds
        switch action {
        case .callModel(_, _, .some(let stepID)), .callTool(_, let stepID, _):
            // Nor is the time people took to decide on the step's calls (this attempt's): the
            // step's clock stops while a call waits.
            let step = machine.step(stepID)
            let waited = machine.approvals.values.reduce(0.0) { total, approval in
                guard approval.key.step == stepID, approval.key.attempt == step?.attempt, let decided = approval.decidedAt else {
                    return total
                }
                return total + max(0, decided.timeIntervalSince(approval.requestedAt))
            }
            let started = [step?.startedAt.map { $0.addingTimeInterval(waited) }, machine.drivenSince].compactMap { $0 }.max() ?? now()
            return started.addingTimeInterval(timeout)
        default:
            return now().addingTimeInterval(timeout)
        }
    }

    // MARK: - Activities

    /// An activity ready to run: everything it needs was taken from the state when it was launched,
    /// so the task does not hold (and later force a copy of) the whole state.
    private struct PreparedActivity: Sendable {
        enum Work: Sendable {
            case model(ChatRequest, stream: Bool, verdict: VerdictContext?)
            /// `note`: what the model is told before the output (a person edited the arguments).
            case tool(ToolCall, allowed: [String], context: ToolContext, truncated: Bool, earlierCalls: Int, note: String?, approved: Bool)
        }

        var key: ActivityKey
        var work: Work
        var deadline: Date
        var timeoutSeconds: Double
        /// A tool call that is not read-only: started only while the lease is safely held. (An
        /// idempotent write run late, after another driver moved on, is a stale write.)
        var changesTheWorld = false

        /// Whether this is a planner call (its answer gets a verdict).
        var isPlanning: Bool {
            if case .model(_, _, .some) = work { return true }
            return false
        }
    }

    /// What judging a planner answer needs to know about the run.
    private struct VerdictContext: Sendable {
        var validator: PlanValidator
        var replanReason: String?
        var attempt: Int
    }

    private func prepare(_ actions: [RunAction], in journal: Journal) -> [PreparedActivity] {
        let machine = journal.machine
        return actions.compactMap { prepare($0, in: machine) }
    }

    private func prepare(_ action: RunAction, in machine: RunStateMachine) -> PreparedActivity? {
        let work: PreparedActivity.Work
        switch action {
        case .callModel(_, let purpose, .some(let stepID)):
            guard let state = machine.step(stepID) else { return nil }
            let request = executor.request(for: state, in: machine, tools: tools, purpose: purpose)
            work = .model(request, stream: machine.configuration.stream, verdict: nil)
        case .callModel(_, _, nil):
            let verdict = VerdictContext(
                validator: PlanValidator(
                    availableTools: Set(tools.availableNames),
                    maxSteps: machine.configuration.maxSteps,
                    completedStepIDs: Set(machine.steps.filter { $0.status == .succeeded }.map(\.step.id))
                ),
                replanReason: machine.replanReason,
                attempt: machine.plannerTurns.count + 1
            )
            work = .model(planner.request(for: machine, tools: tools.specs()), stream: machine.configuration.stream, verdict: verdict)
        case .callTool(let key, let stepID, let call):
            let context = toolContext(for: key, in: machine)
            let state = machine.step(stepID)
            // Was the answer that asked for this call cut off at the token limit?
            let truncated = state?.transcript.contains { item in
                if case .assistant(_, let response) = item {
                    response.finishReason == .length && response.message.toolCalls.contains(call)
                } else {
                    false
                }
            }
            // Calls of the same tool this run made before this one (journaled, so replay agrees).
            let earlier = machine.activities.values.count { record in
                guard case .tool(let name, _, _) = record.kind, name == call.name, record.key != key else { return false }
                return machine.approvals[record.key]?.decision?.verdict != .deny  // a denied call did not run
            }
            var note: String?
            if let decision = machine.approvals[key]?.decision, decision.verdict == .edit {
                note = "\(decision.decidedBy) changed the arguments of this call before approving it; it ran with \(call.arguments)."
            }
            work = .tool(
                call, allowed: state?.step.tools ?? [], context: context, truncated: truncated ?? false, earlierCalls: earlier, note: note,
                // Approved, or started before its tool needed approval (decided then: not asked again).
                approved: machine.approvals[key]?.approvedCall != nil || (machine.approvals[key] == nil && machine.activities[key] != nil))
        case .record:
            return nil
        }
        guard let key = action.activityKey else { return nil }
        let changesTheWorld: Bool
        if case .tool(_, _, let effect) = kind(of: action), effect != .readOnly { changesTheWorld = true } else { changesTheWorld = false }
        return PreparedActivity(
            key: key,
            work: work,
            deadline: deadline(for: action, in: machine),
            timeoutSeconds: machine.configuration.stepTimeoutSeconds,
            changesTheWorld: changesTheWorld
        )
    }

    private func toolContext(for key: ActivityKey, in machine: RunStateMachine) -> ToolContext {
        ToolContext(
            runID: machine.runID, stepID: key.step, idempotencyKey: key.qualified(by: machine.runID),
            workspace: machine.configuration.workspace, logger: logger)
    }

    /// Runs an activity against its deadline; returns the events that record its outcome.
    private func perform(_ activity: PreparedActivity, of run: RunID) async -> [RunEvent] {
        let events = await performing(activity, of: run)
        // One line per activity at debug level, tagged for JSON logs (the metadata is built only
        // when the level lets the line through).
        logger.debug(
            "activity ended",
            metadata: [
                "run_id": "\(run)", "step": "\(activity.key.step)", "activity": "\(activity.key)",
                "outcome": "\(events.contains { if case .activityFailed = $0 { true } else { false } } ? "failed" : "completed")",
            ])
        return events
    }

    private func performing(_ activity: PreparedActivity, of run: RunID) async -> [RunEvent] {
        let key = activity.key
        let remaining = activity.deadline.timeIntervalSince(now())
        let timeout = TroupeError(
            .stepTimeout,
            "\(activity.isPlanning ? "Planning" : "Step '\(key.step)'") exceeded its time limit of "
                + "\(Int(activity.timeoutSeconds)) s."
        )
        guard remaining > 0 else { return [.activityFailed(key: key, error: timeout)] }
        do {
            let events = try await withTimeLimit(.milliseconds(Int64(remaining * 1000)), clock: clock) {
                try await execute(activity, of: run)
            }
            return events ?? [.activityFailed(key: key, error: timeout)]
        } catch {
            return [.activityFailed(key: key, error: TroupeError.wrap(error, as: .internal))]
        }
    }

    private func execute(_ activity: PreparedActivity, of run: RunID) async throws -> [RunEvent] {
        let key = activity.key
        switch activity.work {
        case .model(let request, let stream, let verdict):
            // A retrying model reports each failed attempt here; the retries are journaled with the outcome.
            let attempts = Mutex<[RunEvent]>([])
            let response: ChatResponse
            do {
                let observer = ModelAttemptObserver { attempt in
                    guard let delay = attempt.retryDelaySeconds else { return }
                    attempts.withLock {
                        $0.append(.modelCallRetried(key: key, attempt: attempt.number, error: attempt.error, retryDelaySeconds: delay))
                    }
                }
                response = try await ModelAttempt.$observer.withValue(observer) { [store] in
                    guard stream else { return try await model.complete(request) }
                    // The text as it comes, for live followers (the journal gets the whole answer).
                    return try await model.collect(request) { event in
                        if case .textDelta(let text) = event {
                            store.publish(LiveText(run: run, activity: key, text: Redactor.shared.redact(text)))
                        }
                    }
                }
            } catch {
                try Task.checkCancellation()
                return attempts.withLock { $0 } + [.activityFailed(key: key, error: TroupeError.wrap(error, as: .modelAPI))]
            }
            let retries = attempts.withLock { $0 }
            guard let verdict else { return retries + [.activityCompleted(key: key, result: .model(response))] }
            return retries + [.activityCompleted(key: key, result: .model(response)), judge(response, key: key, verdict)]

        case .tool(let call, let allowed, let context, let truncated, let earlierCalls, let note, let approved):
            var output = await executor.run(
                call, allowed: allowed, tools: tools, context: context, truncated: truncated, earlierCalls: earlierCalls, approved: approved
            )
            try Task.checkCancellation()
            if let note { output.content = note + "\n\n" + output.content }
            return [.activityCompleted(key: key, result: .tool(output))]
        }
    }

    private func judge(_ response: ChatResponse, key: ActivityKey, _ context: VerdictContext) -> RunEvent {
        do {
            switch try planner.judge(response, validator: context.validator) {
            case .accepted(let plan):
                if let reason = context.replanReason {
                    return .replanned(round: key.attempt, plan: plan, reason: reason)
                }
                return .planProposed(round: key.attempt, plan: plan)
            case .rejected(let problems):
                return .planRejected(round: key.attempt, attempt: context.attempt, problems: problems)
            }
        } catch {
            return .runFailed(error: error)
        }
    }
}

/// The driver's view of the journal: the folded state including events staged for the next
/// append, and the sequence number the store is known to end at.
///
/// One state only — staged events are applied at once — so no copy of the state is made per
/// append; if an append is refused (another writer came first), the state is folded again from
/// the store, which is rare. A class, so that the driver's async frames (kept for as long as a
/// run waits on its model) hold a reference rather than the whole state.
private final class Journal {
    let id: RunID
    let owner: String
    let keeper: LeaseKeeper
    let now: @Sendable () -> Date
    let observer: (@Sendable (RunEvent, RunStateMachine) -> Void)?
    private(set) var machine: RunStateMachine
    /// The run's status, without copying the state into the caller's frame.
    var status: RunStatus { machine.status }
    /// The sequence number of the last durable event.
    private(set) var durableSequence = 0
    private var staged: [RunEvent] = []
    /// The staged outcomes of activities, each with what it implies (its retries before it, the
    /// planner's verdict after it): what a reload stages again, unit by unit.
    private var stagedOutcomes: [[RunEvent]] = []
    /// The time of the staged batch: events are applied and recorded with the same time, so a
    /// later fold of the journal yields exactly this state.
    private var stagedAt: Date?

    init(
        id: RunID,
        owner: String,
        keeper: LeaseKeeper,
        now: @escaping @Sendable () -> Date,
        observer: (@Sendable (RunEvent, RunStateMachine) -> Void)?
    ) {
        self.id = id
        self.owner = owner
        self.keeper = keeper
        self.now = now
        self.observer = observer
        self.machine = RunStateMachine(runID: id)
    }

    private var store: any RunStore { keeper.store }

    func load() async throws {
        machine = try RunStateMachine(runID: id, replaying: try await store.events(of: id))
        guard machine.sequence > 0 else { throw TroupeError(.notFound, "No run '\(id)' in this store.") }
        durableSequence = machine.sequence
        staged = []
        stagedOutcomes = []
        stagedAt = nil
    }

    /// Stages what a driver records on taking the run: its lease, a changed configuration, and
    /// the operator's resolution of the call the run is parked on. Returns `false` when the run
    /// is parked and no resolution was given (there is nothing to drive).
    ///
    /// A resolution settles only the call the run was parked on — the one an operator was shown.
    /// Any other call orphaned with it parks the run again, by name, for a decision of its own.
    func stageOpening(owner: String, configuration: RunConfiguration?, resolution: AttentionResolution?) throws -> Bool {
        var opening: [RunEvent] = [.leaseAcquired(owner: owner)]
        if let configuration, configuration != machine.configuration {
            opening.append(.configurationUpdated(configuration: configuration))
        }
        if machine.status == .needsAttention {
            guard let resolution, let key = machine.attentionKey else { return false }
            opening.append(.attentionResolved(key: key, resolution: resolution))
        }
        try stage(opening)
        return true
    }

    /// Stages every decision that needs no I/O (including the approval requests of calls that
    /// need a person's decision: `approval` says which), then the starts of the activities that
    /// do, and returns those activities' actions (except the ones already in flight).
    func stageDecisions(
        excluding inFlight: Set<ActivityKey>,
        kind: (RunAction) -> ActivityKind,
        approval: (ToolCall, StepState?) -> ApprovalRequest?
    ) throws -> [RunAction] {
        while true {
            let actions = machine.nextActions().filter { action in
                action.activityKey.map { !inFlight.contains($0) } ?? true
            }
            let decisions = actions.compactMap { action -> RunEvent? in
                switch action {
                case .record(let event): return event
                // A call already started (orphaned, or retried by an operator) is not asked about
                // again, even if its tool needs approval by now.
                case .callTool(let key, let stepID, let call) where machine.approvals[key] == nil && machine.activities[key] == nil:
                    return approval(call, machine.step(stepID)).map { .approvalRequested(key: key, request: $0) }
                default: return nil
                }
            }
            guard decisions.isEmpty else {
                try stage(decisions)
                continue
            }
            for action in actions {
                guard let key = action.activityKey else { continue }
                try stage(.activityStarted(key: key, kind: kind(action)))
            }
            return actions
        }
    }

    /// Stages the default decision of each approval request whose time ran out.
    func stageExpiredApprovals(at time: Date) throws {
        for approval in machine.pendingApprovals {
            guard let expiry = approval.request.expiresAt, expiry <= time else { continue }
            try stageOutcome([.approvalDecided(key: approval.key, decision: .timedOut(approval.request))])
        }
    }

    /// Stages an activity's outcome: its events as one unit.
    func stageOutcome(_ events: [RunEvent]) throws {
        try stage(events)
        stagedOutcomes.append(events)
    }

    func stage(_ events: [RunEvent]) throws {
        for event in events { try stage(event) }
    }

    /// Adds an event to the next append, applying it to the state at once.
    func stage(_ event: RunEvent) throws {
        let time = stagedAt ?? now()
        try machine.apply(event, at: time)
        stagedAt = time
        staged.append(event)
    }

    /// Appends the staged events in one transaction, fenced by the driver's lease. An append the
    /// store could not make for the moment (`storageUnavailable`) is tried again while the lease lasts.
    func flush() async throws {
        guard !staged.isEmpty, let time = stagedAt else { return }
        let events = staged
        durableSequence = try await keeper.retrying("append to the journal") { [store, id, durableSequence] lease in
            try await store.append(events, to: id, expectedSequence: durableSequence, lease: lease, at: time)
        }
        staged = []
        stagedOutcomes = []
        stagedAt = nil
        for event in events { observer?(event, machine) }
    }

    /// Whether another writer has appended since our last write; if so, their events are folded in.
    func hasForeignEvents() async throws -> Bool {
        let summary = try await store.requireRun(id)
        guard summary.lastSequence > durableSequence else { return false }
        try await reload()
        return true
    }

    /// Folds the journal again from the store, then stages again the outcomes of activities that
    /// were staged and not written, each whole (a planner answer with its verdict, a model call with
    /// its retries); decisions are made anew from the new state. An outcome the new state no
    /// longer takes whole (the run ended meanwhile) keeps only its activity's own events, if those
    /// apply. Stops if another driver took the run.
    func reload() async throws {
        let outcomes = stagedOutcomes
        let records = try await store.events(of: id)
        for record in records where record.sequence > durableSequence {
            if case .leaseAcquired(let other) = record.event, other != owner {
                throw TroupeError(.leaseHeld, "Run \(id) was taken over by \(other); this driver stops.", details: ["owner": other])
            }
        }
        var fresh = RunStateMachine(runID: id)
        for record in records {
            try fresh.apply(record.event, at: record.recordedAt)
            if record.sequence > durableSequence { observer?(record.event, fresh) }
        }
        machine = fresh
        durableSequence = fresh.sequence
        staged = []
        stagedOutcomes = []
        stagedAt = nil
        for outcome in outcomes {
            let activityEvents = outcome.filter { event in
                switch event {
                case .activityCompleted, .activityFailed, .modelCallRetried: true
                default: false
                }
            }
            // Only an ended run takes an activity's result without what it implies (its usage
            // still counts); a live one would be left with an answer and no verdict.
            let units = machine.status.isTerminal ? [outcome, activityEvents] : [outcome]
            for unit in units where !unit.isEmpty {
                var probe = machine
                let applies = unit.allSatisfy { (try? probe.apply($0, at: stagedAt ?? now())) != nil }
                if applies {
                    try stageOutcome(unit)
                    break
                }
            }
        }
    }
}
