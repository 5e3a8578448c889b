public import Foundation
public import TroupeCore

/// Which runs to list.
public struct RunQuery: Sendable, Hashable {
    public var statuses: Set<RunStatus>
    public var createdAfter: Date?
    public var createdBefore: Date?
    public var limit: Int

    public init(statuses: Set<RunStatus> = [], createdAfter: Date? = nil, createdBefore: Date? = nil, limit: Int = 100) {
        self.statuses = statuses
        self.createdAfter = createdAfter
        self.createdBefore = createdBefore
        self.limit = limit
    }
}

/// Who may drive a run until when. A driver renews its lease while it works; when it dies, the
/// lease expires and another driver may take the run over.
public struct Lease: Sendable, Hashable, Codable {
    public var runID: RunID
    public var owner: String
    public var expiresAt: Date

    public init(runID: RunID, owner: String, expiresAt: Date) {
        self.runID = runID
        self.owner = owner
        self.expiresAt = expiresAt
    }
}

/// The only persistence interface: runs, their append-only journals, and leases.
///
/// Appends are optimistic: the caller says which sequence number it expects the journal to end at;
/// if another writer appended first, the append fails with `journalConflict` and nothing is written.
public protocol RunStore: Sendable {
    /// Creates a run and its first event, `runCreated`.
    func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) async throws -> RunSummary

    /// Appends `events` atomically after event `expectedSequence`; returns the new last sequence number.
    func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, at time: Date) async throws -> Int

    /// The run's events with a sequence number greater than `sequence`, in order.
    func events(of run: RunID, after sequence: Int) async throws -> [RunEventRecord]

    /// The run's summary, or `nil` if there is no such run.
    func run(_ id: RunID) async throws -> RunSummary?

    /// Runs matching `query`, newest first.
    func runs(_ query: RunQuery) async throws -> [RunSummary]

    /// Takes the run's lease for `owner` if it is free, expired, already `owner`'s, or `force` is set.
    /// Otherwise throws `leaseHeld` naming the holder. Returns the new lease.
    func acquireLease(on run: RunID, owner: String, until expiry: Date, force: Bool, at time: Date) async throws -> Lease

    /// Extends `owner`'s lease; throws `leaseHeld` if another owner took it.
    func renewLease(on run: RunID, owner: String, until expiry: Date) async throws

    /// Gives the lease up; does nothing if `owner` no longer holds it.
    func releaseLease(on run: RunID, owner: String) async throws

    /// The current lease of the run, if any (expired or not).
    func lease(of run: RunID) async throws -> Lease?

    /// Claims the oldest run that is `pending` or `running` with no live lease: what a worker calls.
    func claimNextRun(owner: String, until expiry: Date, at time: Date) async throws -> RunSummary?

    /// Releases resources (connections, file handles).
    func close() async throws
}

extension RunStore {
    /// The whole journal of a run.
    public func events(of run: RunID) async throws -> [RunEventRecord] {
        try await events(of: run, after: 0)
    }

    /// The run's summary; throws `notFound` if there is none.
    public func requireRun(_ id: RunID) async throws -> RunSummary {
        guard let summary = try await run(id) else {
            throw TroupeError(.notFound, "No run '\(id)' in this store. List runs with `troupe runs`.")
        }
        return summary
    }
}

extension TroupeError {
    static func conflict(_ run: RunID, expected: Int, actual: Int) -> TroupeError {
        TroupeError(
            .journalConflict,
            "Another writer appended to run \(run) first (expected the journal to end at \(expected), it ends at \(actual)).",
            details: ["expected": "\(expected)", "actual": "\(actual)"]
        )
    }

    static func leaseHeld(_ lease: Lease) -> TroupeError {
        TroupeError(
            .leaseHeld,
            "Run \(lease.runID) is being driven by \(lease.owner) (lease until \(lease.expiresAt.formatted(.iso8601))). "
                + "Wait for it to finish, or resume it once that process has stopped.",
            details: ["owner": lease.owner]
        )
    }
}
