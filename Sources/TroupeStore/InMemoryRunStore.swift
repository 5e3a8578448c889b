public import Foundation
public import TroupeCore

/// A ``RunStore`` in memory: for tests and benchmarks. Same semantics as the durable stores, no durability.
public actor InMemoryRunStore: RunStore {
    private var summaries: [RunID: RunSummary] = [:]
    private var journals: [RunID: [RunEventRecord]] = [:]
    private var leases: [RunID: Lease] = [:]

    public init() {}

    public func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) throws -> RunSummary {
        guard summaries[id] == nil else { throw TroupeError(.invalidInput, "Run \(id) already exists.") }
        let event = RunEvent.runCreated(goal: goal, configuration: configuration)
        let summary = RunSummary(id: id, goal: goal, configuration: configuration, createdAt: time).applying([event], at: time)
        summaries[id] = summary
        journals[id] = [RunEventRecord(sequence: 1, recordedAt: time, event: event)]
        return summary
    }

    public func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, at time: Date) throws -> Int {
        guard let summary = summaries[run] else { throw TroupeError(.notFound, "No run '\(run)'.") }
        guard summary.lastSequence == expectedSequence else {
            throw TroupeError.conflict(run, expected: expectedSequence, actual: summary.lastSequence)
        }
        var sequence = expectedSequence
        for event in events {
            sequence += 1
            journals[run, default: []].append(RunEventRecord(sequence: sequence, recordedAt: time, event: event))
        }
        summaries[run] = summary.applying(events, at: time)
        return sequence
    }

    public func events(of run: RunID, after sequence: Int) -> [RunEventRecord] {
        let journal = journals[run] ?? []
        return sequence <= 0 ? journal : Array(journal.dropFirst(sequence))
    }

    public func run(_ id: RunID) -> RunSummary? { summaries[id] }

    public func runs(_ query: RunQuery) -> [RunSummary] {
        let matching = summaries.values.filter { summary in
            (query.statuses.isEmpty || query.statuses.contains(summary.status))
                && (query.createdAfter.map { summary.createdAt > $0 } ?? true)
                && (query.createdBefore.map { summary.createdAt < $0 } ?? true)
        }
        return Array(matching.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }.prefix(query.limit))
    }

    public func acquireLease(on run: RunID, owner: String, until expiry: Date, force: Bool, at time: Date) throws -> Lease {
        guard summaries[run] != nil else { throw TroupeError(.notFound, "No run '\(run)'.") }
        if let current = leases[run], current.owner != owner, current.expiresAt > time, !force {
            throw TroupeError.leaseHeld(current)
        }
        let lease = Lease(runID: run, owner: owner, expiresAt: expiry)
        leases[run] = lease
        return lease
    }

    public func renewLease(on run: RunID, owner: String, until expiry: Date) throws {
        guard let current = leases[run], current.owner == owner else {
            throw TroupeError(.leaseHeld, "The lease on run \(run) was taken over by another driver.")
        }
        leases[run] = Lease(runID: run, owner: owner, expiresAt: expiry)
    }

    public func releaseLease(on run: RunID, owner: String) {
        if leases[run]?.owner == owner { leases[run] = nil }
    }

    public func lease(of run: RunID) -> Lease? { leases[run] }

    public func claimNextRun(owner: String, until expiry: Date, at time: Date) -> RunSummary? {
        let candidates = summaries.values
            .filter { $0.status == .pending || $0.status == .running }
            .filter { summary in leases[summary.id].map { $0.expiresAt <= time } ?? true }
            .sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        guard let next = candidates.first else { return nil }
        leases[next.id] = Lease(runID: next.id, owner: owner, expiresAt: expiry)
        return next
    }

    public func close() {}
}
