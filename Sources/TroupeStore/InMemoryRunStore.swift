public import Foundation
public import TroupeCore

/// A ``RunStore`` in memory: for tests and benchmarks. Same semantics as the durable stores, no durability.
public actor InMemoryRunStore: RunStore, KeyStore {
    private var summaries: [RunID: RunSummary] = [:]
    private var journals: [RunID: [RunEventRecord]] = [:]
    private var leases: [RunID: Lease] = [:]
    /// The last fencing token handed out per run (kept when the lease is released).
    private var tokens: [RunID: Int] = [:]
    private var claims: [RunID: (attempts: Int, claimableAt: Date?)] = [:]
    private let announcer = RunAnnouncer()
    private let live = LiveTextHub()
    /// Each tenant's turn in the claims' round-robin: the claim count when it was last claimed.
    private var turns: [String: Int] = [:]
    private var claimCount = 0
    private var apiKeys: [String: APIKeyRecord] = [:]

    public nonisolated func publish(_ text: LiveText) { live.deliver(text) }

    public nonisolated func liveText(of run: RunID) -> AsyncStream<LiveText> { live.stream(of: run) }

    public init() {}

    public nonisolated func announcements() -> AsyncStream<Void> {
        announcer.stream()
    }

    public func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) throws -> RunSummary {
        let summary = try insertRun(id: id, goal: goal, configuration: configuration, at: time)
        announcer.announce()
        return summary
    }

    private func insertRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) throws -> RunSummary {
        guard summaries[id] == nil else { throw TroupeError(.invalidInput, "Run \(id) already exists.") }
        if turns[configuration.owningTenant] == nil { turns[configuration.owningTenant] = 0 }
        let (event, _, goal) = try StoredForm.created(goal: goal, configuration: configuration)
        let summary = RunSummary(id: id, goal: goal, configuration: configuration, createdAt: time).applying([event], at: time)
        summaries[id] = summary
        journals[id] = [RunEventRecord(sequence: 1, recordedAt: time, event: event)]
        return summary
    }

    public func createLeasedRun(
        id: RunID, goal: String, configuration: RunConfiguration, owner: String, until expiry: Date, at time: Date
    ) throws -> LeasedRun {
        let summary = try insertRun(id: id, goal: goal, configuration: configuration, at: time)
        claims[id] = (1, nil)
        return LeasedRun(summary: summary, lease: grant(id, to: owner, until: expiry), attempt: 1)
    }

    public func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, lease: Lease?, at time: Date) throws -> Int {
        guard let summary = summaries[run] else { throw TroupeError.noRun(run) }
        if let lease, leases[run]?.token != lease.token {
            throw TroupeError.leaseLost(lease, current: leases[run])
        }
        guard summary.lastSequence == expectedSequence else {
            throw TroupeError.conflict(run, expected: expectedSequence, actual: summary.lastSequence)
        }
        let events = try StoredForm.masked(events).events
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

    public func run(_ id: RunID, tenant: String?) -> RunSummary? {
        summaries[id].flatMap { summary in tenant.map { summary.configuration.owningTenant == $0 } ?? true ? summary : nil }
    }

    public func runs(_ query: RunQuery) -> [RunSummary] {
        let matching = summaries.values.filter { summary in
            (query.statuses.isEmpty || query.statuses.contains(summary.status))
                && (query.tenant.map { summary.configuration.owningTenant == $0 } ?? true)
                && (query.createdAfter.map { summary.createdAt > $0 } ?? true)
                && (query.createdBefore.map { summary.createdAt < $0 } ?? true)
                && (query.after.map { (StoredForm.millis(summary.createdAt), summary.id) < ($0.createdAtMillis, $0.id) } ?? true)
        }
        return Array(
            matching.sorted { (StoredForm.millis($0.createdAt), $0.id) > (StoredForm.millis($1.createdAt), $1.id) }.prefix(query.limit))
    }

    public func acquireLease(on run: RunID, owner: String, until expiry: Date, replacing: Lease?, at time: Date) throws -> Lease {
        guard summaries[run] != nil else { throw TroupeError.noRun(run) }
        if let current = leases[run], current.expiresAt > time, current.token != replacing?.token {
            throw TroupeError.leaseHeld(current)
        }
        return grant(run, to: owner, until: expiry)
    }

    private func grant(_ run: RunID, to owner: String, until expiry: Date) -> Lease {
        let token = (tokens[run] ?? 0) + 1
        tokens[run] = token
        let lease = Lease(runID: run, owner: owner, expiresAt: expiry, token: token)
        leases[run] = lease
        return lease
    }

    public func renewLease(_ lease: Lease, until expiry: Date) throws -> Lease {
        guard leases[lease.runID]?.token == lease.token else { throw TroupeError.leaseLost(lease, current: leases[lease.runID]) }
        var renewed = lease
        // Renewals never shorten a lease: one sent earlier may arrive after a later one.
        renewed.expiresAt = max(expiry, leases[lease.runID]?.expiresAt ?? expiry)
        leases[lease.runID] = renewed
        return renewed
    }

    public func releaseLease(_ lease: Lease, outcome: DriveOutcome) {
        guard leases[lease.runID]?.token == lease.token else { return }
        leases[lease.runID] = nil
        switch outcome {
        case .clean:
            claims[lease.runID] = nil
            announcer.announce()
        case .failed(let retryAt): claims[lease.runID, default: (0, nil)].claimableAt = retryAt
        }
    }

    public func lease(of run: RunID) -> Lease? { leases[run] }

    public func claimNextRun(owner: String, until expiry: Date, rules: ClaimRules, at time: Date) -> LeasedRun? {
        let candidates = summaries.values
            .filter { $0.status == .pending || $0.status == .running }
            .filter { rules.tenant.map($0.configuration.owningTenant.elementsEqual) ?? true }
            .filter { summary in leases[summary.id].map { $0.expiresAt <= time } ?? true }
            .filter { summary in
                let claim = claims[summary.id] ?? (0, nil)
                return claim.attempts < rules.maxAttempts && (claim.claimableAt.map { $0 <= time } ?? true)
            }
        let byTenant = Dictionary(grouping: candidates, by: \.configuration.owningTenant).filter { tenant, _ in
            guard let limit = rules.maxConcurrentRuns(of: tenant) else { return true }
            let live = leases.values.filter { $0.expiresAt > time && summaries[$0.runID]?.configuration.owningTenant == tenant }.count
            return live < limit
        }
        guard let tenant = byTenant.keys.min(by: { ((turns[$0] ?? 0), $0) < ((turns[$1] ?? 0), $1) }),
            let next = byTenant[tenant]?.min(by: { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) })
        else { return nil }
        claimCount += 1
        turns[tenant] = claimCount
        let attempt = (claims[next.id]?.attempts ?? 0) + 1
        claims[next.id] = (attempt, nil)
        return LeasedRun(summary: next, lease: grant(next.id, to: owner, until: expiry), attempt: attempt)
    }

    // MARK: Keys

    public func createKey(_ record: APIKeyRecord) throws {
        guard apiKeys[record.id] == nil else { throw TroupeError(.invalidInput, "A key with the ID \(record.id) already exists.") }
        apiKeys[record.id] = record
        if turns[record.tenant] == nil { turns[record.tenant] = 0 }
    }

    public func key(id: String) -> APIKeyRecord? { apiKeys[id] }

    public func keys(tenant: String?) -> [APIKeyRecord] {
        apiKeys.values.filter { tenant.map($0.tenant.elementsEqual) ?? true }.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }
    }

    public func revokeKey(id: String, tenant: String?, at time: Date) -> APIKeyRecord? {
        guard var record = apiKeys[id], tenant.map(record.tenant.elementsEqual) ?? true else { return nil }
        if record.revokedAt == nil { record.revokedAt = time }
        apiKeys[id] = record
        return record
    }

    public func recordKeyUse(_ uses: [String: Date]) {
        for (id, time) in uses {
            guard var record = apiKeys[id] else { continue }
            record.lastUsedAt = max(time, record.lastUsedAt ?? time)
            apiKeys[id] = record
        }
    }

    public func close() {}
}
