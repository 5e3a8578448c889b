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
