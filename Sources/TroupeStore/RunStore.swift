public import Foundation
public import TroupeCore

/// Which runs to list.
public struct RunQuery: Sendable, Hashable {
    public var statuses: Set<RunStatus>
    public var createdAfter: Date?
    public var createdBefore: Date?
    /// Only runs listed after this one, newest first (a page's last run: keyset pagination,
    /// which neither skips nor repeats a run when runs are created between pages).
    public var after: RunPosition?
    public var limit: Int
    /// Only this tenant's runs (`nil`: every tenant's).
    public var tenant: String?

    public init(
        statuses: Set<RunStatus> = [], createdAfter: Date? = nil, createdBefore: Date? = nil, after: RunPosition? = nil, limit: Int = 100,
        tenant: String? = nil
    ) {
        self.tenant = tenant
        self.statuses = statuses
        self.createdAfter = createdAfter
        self.createdBefore = createdBefore
        self.after = after
        self.limit = limit
    }
}

/// Where a run stands in a listing, newest first: by creation time (whole milliseconds, as
/// stores keep it), then by ID.
public struct RunPosition: Sendable, Hashable {
    public var createdAt: Date
    public var id: RunID

    public init(createdAt: Date, id: RunID) {
        self.createdAt = createdAt
        self.id = id
    }

    /// The position of `summary`.
    public init(_ summary: RunSummary) {
        self.init(createdAt: summary.createdAt, id: summary.id)
    }

    /// Creation time in whole milliseconds since 1970, as the stores order by it.
    public var createdAtMillis: Int { StoredForm.millis(createdAt) }
}

/// Who may drive a run until when. A driver renews its lease while it works; when it dies, the
/// lease expires and another driver may take the run over.
///
/// The ``token`` fences a driver: every acquisition of a run's lease (a takeover, a claim, even a
/// second acquisition by the same owner) gets a greater token, and renewals, releases and fenced
/// appends are refused unless they carry the current one. A driver that was paused and woke up
/// after another took its run over can write nothing more.
public struct Lease: Sendable, Hashable, Codable {
    public var runID: RunID
    public var owner: String
    public var expiresAt: Date
    /// The fencing token: greater for every acquisition of this run's lease.
    public var token: Int

    public init(runID: RunID, owner: String, expiresAt: Date, token: Int) {
        self.runID = runID
        self.owner = owner
        self.expiresAt = expiresAt
        self.token = token
    }
}

/// A run together with the lease its caller now holds on it.
public struct LeasedRun: Sendable, Hashable {
    public var summary: RunSummary
    public var lease: Lease
    /// How many times in a row the run has been claimed without a drive that ended cleanly,
    /// this claim included (1 for a run created leased).
    public var attempt: Int

    public init(summary: RunSummary, lease: Lease, attempt: Int) {
        self.summary = summary
        self.lease = lease
        self.attempt = attempt
    }
}

/// How a drive ended, told to the store when its lease is released.
public enum DriveOutcome: Sendable, Hashable {
    /// The drive ended as it should: the run finished, was parked for an operator, or was handed
    /// back (a drain). The run's count of failed claims starts again from zero.
    case clean
    /// The drive failed (an error, not a decision of the run). ``RunStore/claimNextRun(owner:until:maxAttempts:at:)``
    /// leaves the run alone until `retryAt`, and after `maxAttempts` such claims not at all.
    case failed(retryAt: Date)
}

/// What a worker's claim may take.
public struct ClaimRules: Sendable, Hashable {
    /// Claims in a row without a clean end after which a run is parked for an operator.
    public var maxAttempts: Int
    /// Only this tenant's runs (`nil`: every tenant's).
    public var tenant: String?
    /// Runs of a tenant driven at once, across every worker of the store: a tenant with this many
    /// live leases gets no more claims until one ends. Tenants not named here take
    /// ``defaultMaxConcurrentRuns`` (no limit when that is `nil`).
    public var maxConcurrentRuns: [String: Int]
    public var defaultMaxConcurrentRuns: Int?

    public init(maxAttempts: Int, tenant: String? = nil, maxConcurrentRuns: [String: Int] = [:], defaultMaxConcurrentRuns: Int? = nil) {
        self.maxAttempts = maxAttempts
        self.tenant = tenant
        self.maxConcurrentRuns = maxConcurrentRuns
        self.defaultMaxConcurrentRuns = defaultMaxConcurrentRuns
    }

    /// Whether any tenant's concurrent runs are limited.
    public var limitsTenants: Bool { defaultMaxConcurrentRuns != nil || !maxConcurrentRuns.isEmpty }

    /// The limit of `tenant`, if any.
    public func maxConcurrentRuns(of tenant: String) -> Int? { maxConcurrentRuns[tenant] ?? defaultMaxConcurrentRuns }
}

/// The wait before a failed run may be claimed again: doubling from 5 s, at most 10 minutes.
public enum ClaimBackoff {
    /// When a run may be claimed again after its `attempt`-th failed claim in a row.
    public static func retryAt(attempt: Int, after time: Date) -> Date {
        let seconds = min(600.0, 5.0 * pow(2.0, Double(min(max(attempt, 1), 16) - 1)))
        return time.addingTimeInterval(seconds)
    }
}

/// The only persistence interface: runs, their append-only journals, and leases.
///
/// Appends are optimistic: the caller says which sequence number it expects the journal to end at;
/// if another writer appended first, the append fails with `journalConflict` and nothing is written.
/// A driver's appends are also fenced by its lease: if the lease was taken over since, the append
/// fails with `leaseHeld` and nothing is written, whatever the sequence number.
///
/// Errors: `storageUnavailable` for a failure worth retrying (the database is locked by another
/// process, a connection dropped); `storage` for one that is not; `notFound`, `journalConflict`,
/// `leaseHeld` and `invalidInput` for refusals, which concern only the write that was refused.
public protocol RunStore: Sendable {
    /// Creates a run and its first event, `runCreated`.
    func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) async throws -> RunSummary

    /// Creates a run leased to `owner` until `expiry`, in one commit: no worker can claim it
    /// between its creation and its creator's first drive.
    func createLeasedRun(
        id: RunID, goal: String, configuration: RunConfiguration, owner: String, until expiry: Date, at time: Date
    ) async throws -> LeasedRun

    /// Appends `events` atomically after event `expectedSequence`; returns the new last sequence number.
    /// With `lease`, the append is fenced: refused with `leaseHeld` unless that lease is still the run's.
    func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, lease: Lease?, at time: Date) async throws -> Int

    /// The run's events with a sequence number greater than `sequence`, in order.
    func events(of run: RunID, after sequence: Int) async throws -> [RunEventRecord]

    /// The run's summary, or `nil` if there is no such run — or if it is not `tenant`'s (when
    /// `tenant` is given): the filter is part of the store's own query.
    func run(_ id: RunID, tenant: String?) async throws -> RunSummary?

    /// Runs matching `query`, newest first.
    func runs(_ query: RunQuery) async throws -> [RunSummary]

    /// Takes the run's lease for `owner` if it is free or expired at `time`, or if it is exactly
    /// `replacing` (same token): a lease whose holder is known to be dead. A live lease is refused
    /// with `leaseHeld` naming the holder — even when the holder is `owner` itself (one owner may
    /// run several drivers, and a second must not mistake the first one's lease for its own), and
    /// when it is another than `replacing` (two processes that both judged the same holder dead:
    /// only the first takes the run over). Returns the new lease, with a greater token than any
    /// before it.
    func acquireLease(on run: RunID, owner: String, until expiry: Date, replacing: Lease?, at time: Date) async throws -> Lease

    /// Extends `lease`; throws `leaseHeld` if it is no longer the run's (another driver took it).
    func renewLease(_ lease: Lease, until expiry: Date) async throws -> Lease

    /// Gives `lease` up, saying how the drive ended; does nothing if it is no longer the run's.
    func releaseLease(_ lease: Lease, outcome: DriveOutcome) async throws

    /// The current lease of the run, if any (expired or not).
    func lease(of run: RunID) async throws -> Lease?

    /// Claims a run that is `pending` or `running`, has no live lease, is not waiting out a failed
    /// drive's back-off, and was claimed fewer than `rules.maxAttempts` times in a row without a
    /// clean end (the others are parked: left for an operator's `resume`). What a worker calls.
    ///
    /// Tenants take turns: the claim goes to the tenant with claimable runs whose last claim is
    /// the oldest (round-robin), skipping tenants at their concurrent-run limit, and takes that
    /// tenant's oldest claimable run. One tenant's thousands of queued runs never hold another's
    /// back by more than one claim per tenant.
    func claimNextRun(owner: String, until expiry: Date, rules: ClaimRules, at time: Date) async throws -> LeasedRun?

    /// Wake-ups for workers: an element whenever a run may have become claimable (created
    /// without a lease, or its lease released clean) — in this process, or in any process when the
    /// store can tell (PostgreSQL's `LISTEN`). A hint only: workers poll as well, so a lost
    /// announcement delays a run, never loses it. The stream ends when its reader is cancelled.
    func announcements() -> AsyncStream<Void>

    /// Publishes a piece of a model's answer as it streams, for whoever follows the run live
    /// (``liveText(of:)``): in this process, or in any process when the store can tell
    /// (PostgreSQL's `NOTIFY`). Not journaled, and dropped when no one follows; never blocks and
    /// never fails.
    func publish(_ text: LiveText)

    /// The live text of `run` published from now on (a follower that connects late misses what
    /// came before: the journal has every completed answer). Ends when its reader is cancelled.
    func liveText(of run: RunID) -> AsyncStream<LiveText>

    /// Releases resources (connections, file handles).
    func close() async throws
}

extension RunStore {
    /// Appends `events` without a lease (an operator's or another process's write, such as a
    /// cancellation); only the expected sequence number is checked.
    public func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, at time: Date) async throws -> Int {
        try await append(events, to: run, expectedSequence: expectedSequence, lease: nil, at: time)
    }

    /// The run's summary, or `nil` if there is no such run.
    public func run(_ id: RunID) async throws -> RunSummary? {
        try await run(id, tenant: nil)
    }

    /// Claims the next run of any tenant, without limits on tenants (see
    /// ``claimNextRun(owner:until:rules:at:)``).
    public func claimNextRun(owner: String, until expiry: Date, maxAttempts: Int, at time: Date) async throws -> LeasedRun? {
        try await claimNextRun(owner: owner, until: expiry, rules: ClaimRules(maxAttempts: maxAttempts), at: time)
    }

    /// The whole journal of a run.
    public func events(of run: RunID) async throws -> [RunEventRecord] {
        try await events(of: run, after: 0)
    }

    /// The run's summary; throws `notFound` if there is none.
    /// Runs `body` with this store, then closes it, even on error.
    public func closing<T: Sendable>(after body: (Self) async throws -> T) async throws -> T {
        do {
            let result = try await body(self)
            try? await close()
            return result
        } catch {
            try? await close()
            throw error
        }
    }

    public func requireRun(_ id: RunID) async throws -> RunSummary {
        guard let summary = try await run(id) else {
            throw TroupeError(.notFound, "No run '\(id)' in this store. List runs with `troupe runs`.")
        }
        return summary
    }
}

extension TroupeError {
    package static func conflict(_ run: RunID, expected: Int, actual: Int) -> TroupeError {
        TroupeError(
            .journalConflict,
            "Another writer appended to run \(run) first (expected the journal to end at \(expected), it ends at \(actual)).",
            details: ["expected": "\(expected)", "actual": "\(actual)"]
        )
    }

    /// A write of a driver whose lease is no longer the run's.
    package static func leaseLost(_ lease: Lease, current: Lease?) -> TroupeError {
        let holder = current.map { " by \($0.owner)" } ?? ""
        return TroupeError(
            .leaseHeld,
            "The lease on run \(lease.runID) was taken over\(holder); this driver (\(lease.owner)) stops without writing more.",
            details: ["owner": current?.owner ?? ""]
        )
    }

    package static func leaseHeld(_ lease: Lease) -> TroupeError {
        TroupeError(
            .leaseHeld,
            "Run \(lease.runID) is being driven by \(lease.owner) (lease until \(lease.expiresAt.formatted(.iso8601))). "
                + "Wait for it to finish, or resume it once that process has stopped.",
            details: ["owner": lease.owner]
        )
    }
}
