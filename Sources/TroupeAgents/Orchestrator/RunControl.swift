public import Foundation
public import TroupeCore
public import TroupeStore

/// What an operator (the CLI, the API) does to a run without driving it: cancel it, or hand it
/// to the workers again. Both are appends at the journal's tail, retried when a driver appends
/// first, and both are idempotent.
extension RunStore {
    /// Appends `runCancelled`. Returns the status of a run that had already ended (nothing is
    /// written then), `nil` once cancelled.
    public func cancelRun(_ id: RunID, reason: String, at time: @Sendable () -> Date = { Date() }) async throws -> RunStatus? {
        for _ in 0..<20 {
            let summary = try await requireRun(id)
            if summary.status.isTerminal { return summary.status }
            do {
                _ = try await append([.runCancelled(reason: reason)], to: id, expectedSequence: summary.lastSequence, at: time())
                return nil
            } catch let error as TroupeError where error.code == .journalConflict {
                continue
            }
        }
        throw TroupeError(.journalConflict, "Run \(id) kept changing while it was being cancelled; try again.")
    }

    /// Makes a stopped run claimable again for the workers: a run parked in `needsAttention`
    /// gets `resolution` for the call it is parked on (journaled), and a run left alone after
    /// too many failed drives starts its count again. A run with a live driver, or that ended,
    /// is left as it is. Returns its summary afterwards.
    ///
    /// - Throws: `invalidInput` for a parked run without a resolution.
    public func queueForWorkers(
        _ id: RunID, resolution: AttentionResolution?, owner: String, at time: @Sendable () -> Date = { Date() }
    ) async throws -> RunSummary {
        for _ in 0..<20 {
            let summary = try await requireRun(id)
            if summary.status.isTerminal { return summary }
            if summary.status == .needsAttention {
                guard let resolution else {
                    throw TroupeError(
                        .invalidInput,
                        "Run \(id) needs attention: \(summary.error?.message ?? "a side-effecting call was in flight"). "
                            + "Decide on that call: retry (run it again) or skip (do not).")
                }
                let machine = try RunStateMachine(runID: id, replaying: try await events(of: id))
                guard let key = machine.attentionKey else { throw TroupeError(.internal, "Run \(id) needs attention on no call.") }
                do {
                    _ = try await append(
                        [.attentionResolved(key: key, resolution: resolution)], to: id, expectedSequence: summary.lastSequence, at: time())
                } catch let error as TroupeError where error.code == .journalConflict {
                    continue
                }
            }
            // A clean release starts the count of failed drives again and announces the run.
            do {
                let lease = try await acquireLease(on: id, owner: owner, until: time().addingTimeInterval(5), replacing: nil, at: time())
                try await releaseLease(lease, outcome: .clean)
            } catch let error as TroupeError where error.code == .leaseHeld {
                // Someone is driving it: nothing to queue.
            }
            return try await requireRun(id)
        }
        throw TroupeError(.journalConflict, "Run \(id) kept changing while it was being resumed; try again.")
    }
}

/// Decisions on tool calls that wait for a person: what the API, `troupe approve` and the
/// workers' timeout sweep share.
extension RunStore {
    /// Journals `decision` on the call `key` of run `id` that waits for approval (the run's only
    /// waiting call when `key` is `nil`), then hands the run to the workers if nothing else
    /// waits. Appends at the journal's tail like ``cancelRun(_:reason:at:)``: a driver at work
    /// on the run's other steps folds it in and goes on. Returns the run's state afterwards.
    ///
    /// An `edit` must carry a JSON object that satisfies the tool's parameters as they were when
    /// the call was asked for (journaled with the request).
    ///
    /// - Throws: `notFound` when there is no such run or no such waiting call (listing the ones
    ///   there are); `invalidTransition` when the call was decided already (naming by whom) or the
    ///   run ended; `invalidInput` for a decision that is not well formed.
    public func decideApproval(
        _ id: RunID,
        key: ActivityKey?,
        decision: ApprovalDecision,
        owner: String,
        at time: @Sendable () -> Date = { Date() }
    ) async throws -> RunStateMachine {
        for _ in 0..<20 {
            let summary = try await requireRun(id)
            let machine = try RunStateMachine(runID: id, replaying: try await events(of: id))
            if machine.status.isTerminal {
                throw TroupeError(.invalidTransition, "Run \(id) already \(machine.status.rawValue); there is nothing to decide.")
            }
            if let key, let state = machine.approvals[key], let existing = state.decision,
                var again = try? state.request.normalized(decision)
            {
                again.reason = again.reason.map(Redactor.shared.redact)  // as the store kept it
                if again == existing { return machine }  // the same decision again (a retry after a lost answer)
            }
            let approval = try Self.approval(key, of: machine)
            let decision = try approval.request.normalized(decision)
            do {
                _ = try await append(
                    [.approvalDecided(key: approval.key, decision: decision)], to: id, expectedSequence: summary.lastSequence, at: time())
            } catch let error as TroupeError where error.code == .journalConflict {
                continue
            }
            let after = try await requireRun(id)
            if after.status == .running || after.status == .pending {
                _ = try await queueForWorkers(id, resolution: nil, owner: owner, at: time)
            }
            return try RunStateMachine(runID: id, replaying: try await events(of: id))
        }
        throw TroupeError(.journalConflict, "Run \(id) kept changing while the decision was being recorded; try again.")
    }

    /// The waiting call `key` of the run (its only one for `nil`).
    private static func approval(_ key: ActivityKey?, of machine: RunStateMachine) throws(TroupeError) -> ApprovalState {
        let pending = machine.pendingApprovals
        let listed = pending.map { "\($0.key) (\($0.request.call.name))" }.joined(separator: ", ")
        guard let key else {
            return pending[try RunStateMachine.onlyWaitingCall(of: pending.map { ("\($0.key)", $0.request.call.name) }, run: machine.runID)]
        }
        guard let approval = machine.approvals[key] else {
            throw TroupeError(
                .notFound,
                "Run \(machine.runID) has no call \(key) that needs approval"
                    + (pending.isEmpty ? "." : "; waiting: \(listed)."))
        }
        if let decided = approval.decision {
            throw TroupeError(
                .invalidTransition,
                "Call \(key) of run \(machine.runID) was already decided (\(decided.verdict.rawValue) by \(decided.decidedBy)).")
        }
        return approval
    }
}

extension RunStore {
    /// The calls waiting for a person's decision in the `limit` most recent waiting runs (of
    /// `tenant`, or of every tenant), oldest request first: `GET /v1/approvals` and `troupe approvals`.
    public func waitingApprovals(tenant: String? = nil, limit: Int = 100) async throws -> [RunReport.ApprovalReport] {
        var approvals: [RunReport.ApprovalReport] = []
        for summary in try await runs(RunQuery(statuses: [.waitingForApproval], limit: limit, tenant: tenant)) {
            let machine = try RunStateMachine(runID: summary.id, replaying: try await events(of: summary.id))
            approvals += machine.pendingApprovals.map { RunReport.ApprovalReport($0, of: machine) }
        }
        return approvals.sorted { ($0.requestedAt, $0.runId, $0.callKey) < ($1.requestedAt, $1.runId, $1.callKey) }
    }

    /// Applies the default decision to every call whose wait for approval ran out, in runs that
    /// wait (no driver holds them: a driver applies its own run's timeouts). What workers do
    /// from time to time. Returns the runs decided on.
    public func applyApprovalTimeouts(owner: String, limit: Int = 200, at time: @Sendable () -> Date = { Date() }) async throws -> [RunID] {
        var decided: [RunID] = []
        var after: RunPosition?
        while true {
            let page = try await runs(RunQuery(statuses: [.waitingForApproval], after: after, limit: limit))
            for summary in page {
                let machine = try RunStateMachine(runID: summary.id, replaying: try await events(of: summary.id))
                let now = time()
                for approval in machine.pendingApprovals {
                    guard let expiry = approval.request.expiresAt, expiry <= now else { continue }
                    do {
                        _ = try await decideApproval(
                            summary.id, key: approval.key, decision: .timedOut(approval.request), owner: owner, at: time)
                        decided.append(summary.id)
                    } catch let error as TroupeError where error.code == .invalidTransition || error.code == .notFound {
                        // Decided (or ended) meanwhile by someone else.
                    }
                }
            }
            guard page.count == limit, let last = page.last else { return decided }
            after = RunPosition(last)
        }
    }
}

extension RunStateMachine {
    /// The index of a run's only waiting call among `pending` (key and tool, as shown): what a
    /// decision without a key means. `notFound` when none waits; `invalidInput`, listing them,
    /// when several do.
    public static func onlyWaitingCall(of pending: [(key: String, tool: String)], run: RunID) throws(TroupeError) -> Int {
        guard pending.count == 1 else {
            let listed = pending.map { "\($0.key) (\($0.tool))" }.joined(separator: ", ")
            throw TroupeError(
                pending.isEmpty ? .notFound : .invalidInput,
                pending.isEmpty
                    ? "Run \(run) has no call waiting for approval."
                    : "Run \(run) has \(pending.count) calls waiting for approval: \(listed). Say which (--call KEY).")
        }
        return 0
    }
}
