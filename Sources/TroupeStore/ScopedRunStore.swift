public import Foundation
public import TroupeCore

/// A handle on a store that reaches one tenant's runs only (or every tenant's, for
/// ``TenantScope/all``): what the API gives each request, so that a route that forgets a check
/// still cannot touch another tenant's run.
///
/// Reads pass the tenant into the store's own queries (``RunStore/run(_:tenant:)``,
/// ``RunQuery/tenant``, ``ClaimRules/tenant``); writes, leases and journals of a run first look
/// the run up that way. Another tenant's run is answered exactly as a run that does not exist
/// (`notFound`, the same message), so that no one learns which IDs another tenant uses. Runs
/// created through the handle are its tenant's. Closing the handle leaves the store open.
public struct ScopedRunStore: RunStore {
    public let scope: TenantScope
    public let base: any RunStore

    public init(_ base: any RunStore, scope: TenantScope) {
        self.base = base
        self.scope = scope
    }

    /// The tenant a caller's filter narrows to within this scope; `.none` when the filter names
    /// another tenant than the scope's (nothing can match).
    private func narrowed(_ tenant: String?) -> String?? {
        guard let own = scope.tenant else { return .some(tenant) }
        if let tenant, tenant != own { return .none }
        return .some(own)
    }

    private func requireInScope(_ run: RunID) async throws {
        guard let tenant = scope.tenant else { return }
        guard try await base.run(run, tenant: tenant) != nil else { throw TroupeError.noRun(run) }
    }

    private func owned(_ configuration: RunConfiguration) -> RunConfiguration {
        var configuration = configuration
        if let tenant = scope.tenant { configuration.tenant = tenant }
        return configuration
    }

    public func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) async throws -> RunSummary {
        try await base.createRun(id: id, goal: goal, configuration: owned(configuration), at: time)
    }

    public func createLeasedRun(
        id: RunID, goal: String, configuration: RunConfiguration, owner: String, until expiry: Date, at time: Date
    ) async throws -> LeasedRun {
        try await base.createLeasedRun(id: id, goal: goal, configuration: owned(configuration), owner: owner, until: expiry, at: time)
    }

    public func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, lease: Lease?, at time: Date) async throws -> Int {
        try await requireInScope(run)
        return try await base.append(events, to: run, expectedSequence: expectedSequence, lease: lease, at: time)
    }

    public func events(of run: RunID, after sequence: Int) async throws -> [RunEventRecord] {
        try await requireInScope(run)
        return try await base.events(of: run, after: sequence)
    }

    public func run(_ id: RunID, tenant: String?) async throws -> RunSummary? {
        guard let tenant = narrowed(tenant) else { return nil }
        return try await base.run(id, tenant: tenant)
    }

    public func runs(_ query: RunQuery) async throws -> [RunSummary] {
        guard let tenant = narrowed(query.tenant) else { return [] }
        var query = query
        query.tenant = tenant
        return try await base.runs(query)
    }

    public func acquireLease(on run: RunID, owner: String, until expiry: Date, replacing: Lease?, at time: Date) async throws -> Lease {
        try await requireInScope(run)
        return try await base.acquireLease(on: run, owner: owner, until: expiry, replacing: replacing, at: time)
    }

    public func renewLease(_ lease: Lease, until expiry: Date) async throws -> Lease {
        try await requireInScope(lease.runID)
        return try await base.renewLease(lease, until: expiry)
    }

    public func releaseLease(_ lease: Lease, outcome: DriveOutcome) async throws {
        try await requireInScope(lease.runID)
        try await base.releaseLease(lease, outcome: outcome)
    }

    public func lease(of run: RunID) async throws -> Lease? {
        try await requireInScope(run)
        return try await base.lease(of: run)
    }

    public func claimNextRun(owner: String, until expiry: Date, rules: ClaimRules, at time: Date) async throws -> LeasedRun? {
        guard let tenant = narrowed(rules.tenant) else { return nil }
        var rules = rules
        rules.tenant = tenant
        return try await base.claimNextRun(owner: owner, until: expiry, rules: rules, at: time)
    }

    public func announcements() -> AsyncStream<Void> { base.announcements() }

    public func publish(_ text: LiveText) { base.publish(text) }

    /// The live text of `run`. Not filtered by itself (it is a stream of hints): look the run up
    /// through this handle first, as the event stream does.
    public func liveText(of run: RunID) -> AsyncStream<LiveText> { base.liveText(of: run) }

    /// Does nothing: the handle does not own the store.
    public func close() async throws {}
}

extension TroupeError {
    /// The refusal for a run that does not exist, or is another tenant's: the same words for both.
    package static func noRun(_ run: RunID) -> TroupeError {
        TroupeError(.notFound, "No run '\(run)' in this store.")
    }
}
