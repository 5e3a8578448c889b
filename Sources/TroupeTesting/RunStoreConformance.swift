import Foundation
import Synchronization
import TroupeCore
public import TroupeStore

/// Checks that a ``RunStore`` keeps the contract every store must keep: atomic optimistic appends,
/// ordered journals, summaries that follow the events, queries, and leases.
///
/// Run it against your store in a test: `try await RunStoreConformance { try await makeStore() }.run()`.
/// Each check gets a fresh store from the factory; a broken promise throws a ``Failure`` naming it.
public struct RunStoreConformance: Sendable {
    /// A broken promise, with the check that found it.
    public struct Failure: Error, CustomStringConvertible {
        public var check: String
        public var message: String
        public var description: String { "\(check): \(message)" }
    }

    private let makeStore: @Sendable () async throws -> any RunStore

    public init(makeStore: @escaping @Sendable () async throws -> any RunStore) {
        self.makeStore = makeStore
    }

    /// Runs every check.
    public func run() async throws {
        try await check("createAndRead", createAndRead)
        try await check("appendIsOptimistic", appendIsOptimistic)
        try await check("summaryFollowsEvents", summaryFollowsEvents)
        try await check("queries", queries)
        try await check("leases", leases)
        try await check("fencedAppends", fencedAppends)
        try await check("claimNextRun", claimNextRun)
        try await check("claimBackoffAndParking", claimBackoffAndParking)
        try await check("liveText", liveText)
        try await check("tenantScopes", tenantScopes)
        try await check("fairClaimsAcrossTenants", fairClaimsAcrossTenants)
        try await check("tenantConcurrencyLimits", tenantConcurrencyLimits)
        try await check("keys", keys)
    }

    private func check(_ name: String, _ body: (any RunStore) async throws -> Void) async throws {
        let store = try await makeStore()
        do {
            try await body(store)
            try await store.close()
        } catch let failure as Failure {
            try? await store.close()
            throw Failure(check: name, message: failure.message)
        } catch {
            try? await store.close()
            throw Failure(check: name, message: "unexpected error: \(error)")
        }
    }

    private func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw Failure(check: "", message: message()) }
    }

    private static let start = Date(timeIntervalSince1970: 1_800_000_000)

    private func createAndRead(_ store: any RunStore) async throws {
        let id = RunID.make()
        let summary = try await store.createRun(id: id, goal: "goal", configuration: RunConfiguration(), at: Self.start)
        try expect(summary.status == .pending && summary.lastSequence == 1, "a new run is pending with one event, got \(summary)")
        let events = try await store.events(of: id)
        try expect(events.count == 1, "a new run's journal has runCreated only, got \(events.count) events")
        if case .runCreated(let goal, _) = events.first?.event {
            try expect(goal == "goal", "runCreated keeps the goal")
        } else {
            try expect(false, "the first event is runCreated, got \(String(describing: events.first))")
        }
        do {
            _ = try await store.createRun(id: id, goal: "again", configuration: RunConfiguration(), at: Self.start)
            try expect(false, "creating a run twice must fail")
        } catch is TroupeError {}
        try expect(try await store.run(RunID("run_missing")) == nil, "an unknown run reads as nil")
    }

    private func appendIsOptimistic(_ store: any RunStore) async throws {
        let id = RunID.make()
        _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Self.start)
        let last = try await store.append(
            [.leaseAcquired(owner: "a"), .stepStarted(stepID: "s1", attempt: 1)],
            to: id,
            expectedSequence: 1,
            at: Self.start
        )
        try expect(last == 3, "two events after runCreated end at 3, got \(last)")
        do {
            _ = try await store.append([.runCancelled(reason: "late")], to: id, expectedSequence: 1, at: Self.start)
            try expect(false, "an append expecting a stale sequence must fail")
        } catch let error as TroupeError {
            try expect(error.code == .journalConflict, "a stale append fails with journalConflict, got \(error.code)")
        }
        let events = try await store.events(of: id)
        try expect(events.map(\.sequence) == [1, 2, 3], "the journal is gap-free and unforked, got \(events.map(\.sequence))")
        try expect(try await store.events(of: id, after: 2).map(\.sequence) == [3], "events(after:) returns the tail")
        do {
            _ = try await store.append([.runCancelled(reason: "x")], to: RunID("run_missing"), expectedSequence: 0, at: Self.start)
            try expect(false, "appending to an unknown run must fail")
        } catch is TroupeError {}
    }

    private func summaryFollowsEvents(_ store: any RunStore) async throws {
        let id = RunID.make()
        _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Self.start)
        let key = ActivityKey(step: "plan", attempt: 0, callIndex: 0)
        let response = ChatResponse(message: .assistant("{}"), finishReason: .stop, usage: Usage(inputTokens: 7, outputTokens: 3))
        _ = try await store.append(
            [
                .leaseAcquired(owner: "a"), .activityStarted(key: key, kind: .model(purpose: .plan)),
                .activityCompleted(key: key, result: .model(response)), .runSucceeded(answer: "done"),
            ],
            to: id,
            expectedSequence: 1,
            at: Self.start.addingTimeInterval(5)
        )
        let summary = try await store.run(id)
        try expect(summary?.status == .succeeded, "the summary's status follows the events, got \(String(describing: summary?.status))")
        try expect(summary?.usage == Usage(inputTokens: 7, outputTokens: 3), "usage adds up model calls")
        try expect(summary?.answer == "done" && summary?.lastSequence == 5, "answer and last sequence are kept")
        try expect(summary?.updatedAt == Self.start.addingTimeInterval(5), "updatedAt is the time of the last append")
    }

    private func queries(_ store: any RunStore) async throws {
        var ids: [RunID] = []
        for index in 0..<3 {
            let id = RunID.make()
            ids.append(id)
            _ = try await store.createRun(
                id: id, goal: "g\(index)", configuration: RunConfiguration(), at: Self.start.addingTimeInterval(Double(index)))
        }
        _ = try await store.append([.runCancelled(reason: "x")], to: ids[1], expectedSequence: 1, at: Self.start)
        let all = try await store.runs(RunQuery())
        try expect(all.map(\.id) == ids.reversed(), "runs are listed newest first")
        let cancelled = try await store.runs(RunQuery(statuses: [.cancelled]))
        try expect(cancelled.map(\.id) == [ids[1]], "status filters apply")
        let recent = try await store.runs(RunQuery(createdAfter: Self.start.addingTimeInterval(0.5)))
        try expect(recent.map(\.id) == [ids[2], ids[1]], "time filters apply")
        try expect(try await store.runs(RunQuery(limit: 1)).count == 1, "the limit applies")

        // Pages by position: runs created in the same millisecond are told apart by ID, and a run
        // created between pages is neither skipped nor repeated.
        let twins = [RunID("twin-a"), RunID("twin-b")]
        for id in twins {
            _ = try await store.createRun(
                id: id, goal: "twin", configuration: RunConfiguration(), at: Self.start.addingTimeInterval(1.0004))
        }
        let first = try await store.runs(RunQuery(limit: 2))
        try expect(first.map(\.id) == [ids[2], twins[1]], "the first page is the newest runs")
        _ = try await store.createRun(id: .make(), goal: "later", configuration: RunConfiguration(), at: Self.start.addingTimeInterval(9))
        let second = try await store.runs(RunQuery(after: RunPosition(first[1]), limit: 2))
        try expect(second.map(\.id) == [twins[0], ids[1]], "the next page goes on after the last run listed")
        let last = try await store.runs(RunQuery(after: RunPosition(second[1]), limit: 2))
        try expect(last.map(\.id) == [ids[0]], "the last page ends the listing")
    }

    private func leases(_ store: any RunStore) async throws {
        let id = RunID.make()
        _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Self.start)
        let later = Self.start.addingTimeInterval(30)
        let first = try await store.acquireLease(on: id, owner: "a", until: later, replacing: nil, at: Self.start)
        do {
            _ = try await store.acquireLease(on: id, owner: "b", until: later, replacing: nil, at: Self.start.addingTimeInterval(1))
            try expect(false, "a live lease must not be taken by another owner")
        } catch let error as TroupeError {
            try expect(error.code == .leaseHeld, "a held lease fails with leaseHeld, got \(error.code)")
        }
        do {
            _ = try await store.acquireLease(on: id, owner: "a", until: later, replacing: nil, at: Self.start.addingTimeInterval(1))
            try expect(false, "a live lease must not be taken again by its own owner (a second driver of the same process)")
        } catch let error as TroupeError {
            try expect(error.code == .leaseHeld, "a second acquisition by the same owner fails with leaseHeld, got \(error.code)")
        }
        let renewed = try await store.renewLease(first, until: later.addingTimeInterval(30))
        try expect(try await store.lease(of: id)?.expiresAt == later.addingTimeInterval(30), "renewal extends the lease")
        try expect(renewed.token == first.token, "renewal keeps the token")
        let taken = try await store.acquireLease(
            on: id, owner: "b", until: later.addingTimeInterval(100), replacing: nil, at: later.addingTimeInterval(31))
        try expect(taken.owner == "b", "an expired lease can be taken")
        try expect(taken.token > first.token, "every acquisition gets a greater token")
        do {
            _ = try await store.renewLease(first, until: later.addingTimeInterval(200))
            try expect(false, "the old owner cannot renew a lease it lost")
        } catch let error as TroupeError {
            try expect(error.code == .leaseHeld, "renewing a lost lease fails with leaseHeld, got \(error.code)")
        }
        let forced = try await store.acquireLease(on: id, owner: "c", until: later, replacing: taken, at: Self.start)
        try expect(try await store.lease(of: id)?.owner == "c", "a live lease is taken when it is the one to replace")
        do {
            _ = try await store.acquireLease(on: id, owner: "d", until: later, replacing: taken, at: Self.start)
            try expect(false, "a lease already replaced must not be replaced again (two processes judged the same holder dead)")
        } catch let error as TroupeError {
            try expect(error.code == .leaseHeld, "replacing a lease that is no longer current fails with leaseHeld, got \(error.code)")
        }
        try await store.releaseLease(taken, outcome: .clean)
        try expect(try await store.lease(of: id)?.owner == "c", "releasing a lease that was taken over does nothing")
        try await store.releaseLease(forced, outcome: .clean)
        try expect(try await store.lease(of: id) == nil, "release frees the lease")
    }

    private func fencedAppends(_ store: any RunStore) async throws {
        let id = RunID.make()
        _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Self.start)
        let later = Self.start.addingTimeInterval(30)
        let paused = try await store.acquireLease(on: id, owner: "paused", until: later, replacing: nil, at: Self.start)
        let sequence = try await store.append([.leaseAcquired(owner: "paused")], to: id, expectedSequence: 1, lease: paused, at: Self.start)
        try expect(sequence == 2, "a fenced append by the lease holder is written")
        // Another driver takes the run over but has not written yet: the journal still ends where the paused one expects.
        let other = try await store.acquireLease(on: id, owner: "other", until: later, replacing: paused, at: Self.start)
        do {
            _ = try await store.append([.runCancelled(reason: "stale")], to: id, expectedSequence: 2, lease: paused, at: Self.start)
            try expect(false, "an append fenced by a lease that was taken over must be refused")
        } catch let error as TroupeError {
            try expect(error.code == .leaseHeld, "a stale lease's append fails with leaseHeld, got \(error.code)")
        }
        try expect(try await store.events(of: id).count == 2, "a refused append writes nothing")
        _ = try await store.append([.leaseAcquired(owner: "other")], to: id, expectedSequence: 2, lease: other, at: Self.start)
        try await store.releaseLease(other, outcome: .clean)
        do {
            _ = try await store.append([.runCancelled(reason: "late")], to: id, expectedSequence: 3, lease: other, at: Self.start)
            try expect(false, "an append fenced by a released lease must be refused")
        } catch let error as TroupeError {
            try expect(error.code == .leaseHeld, "a released lease's append fails with leaseHeld, got \(error.code)")
        }
        _ = try await store.append([.runCancelled(reason: "operator")], to: id, expectedSequence: 3, at: Self.start)
        try expect(try await store.requireRun(id).status == .cancelled, "an unfenced append (an operator's) is written")
    }

    private func claimNextRun(_ store: any RunStore) async throws {
        let first = RunID.make()
        let second = RunID.make()
        _ = try await store.createRun(id: first, goal: "g", configuration: RunConfiguration(), at: Self.start)
        _ = try await store.createRun(id: second, goal: "g", configuration: RunConfiguration(), at: Self.start.addingTimeInterval(1))
        let until = Self.start.addingTimeInterval(30)
        let claimed = try await store.claimNextRun(owner: "w1", until: until, maxAttempts: 5, at: Self.start)
        try expect(claimed?.summary.id == first, "the oldest runnable run is claimed first")
        try expect(claimed?.attempt == 1 && claimed?.lease.owner == "w1", "a first claim is attempt 1, leased to its worker")
        let next = try await store.claimNextRun(owner: "w2", until: until, maxAttempts: 5, at: Self.start)
        try expect(next?.summary.id == second, "a leased run is skipped")
        try expect(try await store.claimNextRun(owner: "w3", until: until, maxAttempts: 5, at: Self.start) == nil, "nothing left to claim")
        let expired = try await store.claimNextRun(
            owner: "w3", until: until.addingTimeInterval(60), maxAttempts: 5, at: until.addingTimeInterval(1))
        try expect(expired?.summary.id == first, "a run whose lease expired can be claimed again")
        try expect(expired?.attempt == 2, "a claim after a drive that never ended counts as attempt 2, got \(expired?.attempt ?? 0)")

        let created = try await store.createLeasedRun(
            id: RunID.make(), goal: "g", configuration: RunConfiguration(), owner: "cli", until: until,
            at: Self.start.addingTimeInterval(-10))
        try expect(created.lease.owner == "cli", "a run created leased is leased to its creator")
        let stolen = try await store.claimNextRun(owner: "w4", until: until, maxAttempts: 5, at: Self.start)
        try expect(stolen?.summary.id != created.summary.id, "a run created leased cannot be claimed before its lease ends")
    }

    private func claimBackoffAndParking(_ store: any RunStore) async throws {
        let id = RunID.make()
        _ = try await store.createRun(id: id, goal: "fails every time", configuration: RunConfiguration(), at: Self.start)
        var time = Self.start
        for attempt in 1...3 {
            guard let claim = try await store.claimNextRun(owner: "w", until: time.addingTimeInterval(30), maxAttempts: 3, at: time) else {
                throw Failure(check: "", message: "attempt \(attempt) should find the run claimable")
            }
            try expect(claim.attempt == attempt, "attempts are counted, expected \(attempt), got \(claim.attempt)")
            let retryAt = time.addingTimeInterval(100)
            try await store.releaseLease(claim.lease, outcome: .failed(retryAt: retryAt))
            let early = try await store.claimNextRun(
                owner: "w", until: time.addingTimeInterval(60), maxAttempts: 3, at: time.addingTimeInterval(50))
            try expect(early == nil, "a failed run is not claimed again before its back-off ends")
            time = retryAt
        }
        let parked = try await store.claimNextRun(owner: "w", until: time.addingTimeInterval(30), maxAttempts: 3, at: time)
        try expect(parked == nil, "a run that failed maxAttempts claims in a row is parked, not claimed again")
        // An operator drives it (acquireLease) and the drive ends cleanly: the count starts again.
        let lease = try await store.acquireLease(on: id, owner: "operator", until: time.addingTimeInterval(30), replacing: nil, at: time)
        try await store.releaseLease(lease, outcome: .clean)
        let again = try await store.claimNextRun(owner: "w", until: time.addingTimeInterval(30), maxAttempts: 3, at: time)
        try expect(again?.attempt == 1, "after a clean drive the run is claimable again from attempt 1")
    }

    /// Live text reaches the followers of its run, whole and in order, and no one else. A store
    /// may deliver it through another process (PostgreSQL's `NOTIFY`), whose listener starts
    /// with the first follower: text published before it listens is lost, so the check publishes
    /// a greeting again until one arrives (within 10 s), then the text it checks.
    private func liveText(_ store: any RunStore) async throws {
        let followed = RunID.make()
        let other = RunID.make()
        let key = ActivityKey(step: "s1", attempt: 1, callIndex: 0)
        let received = Received()
        let stream = store.liveText(of: followed)
        let collector = Task {
            for await piece in stream {
                received.add(piece)
                if piece.text.hasSuffix("end") { return }
            }
        }
        defer { collector.cancel() }
        let deadline = ContinuousClock.now + .seconds(10)
        while received.pieces.isEmpty {
            try expect(ContinuousClock.now < deadline, "no live text arrived in 10 s")
            store.publish(LiveText(run: other, activity: key, text: "not yours"))
            store.publish(LiveText(run: followed, activity: key, text: "hello"))
            try await Task.sleep(for: .milliseconds(100))
        }
        // A long piece (more than a PostgreSQL notification holds) of multi-byte text and of
        // characters that JSON escapes, then the end.
        let long = String(repeating: "ü€😀 ", count: 3_000) + String(repeating: "\"\\\n\u{1}", count: 3_000)
        store.publish(LiveText(run: followed, activity: key, text: long))
        store.publish(LiveText(run: followed, activity: key, text: "end"))
        while !received.pieces.contains(where: { $0.text.hasSuffix("end") }) {
            try expect(ContinuousClock.now < deadline + .seconds(10), "the live text did not all arrive in 10 s")
            try await Task.sleep(for: .milliseconds(20))
        }
        let pieces = received.pieces
        try expect(pieces.allSatisfy { $0.run == followed && $0.activity == key }, "live text of another run was delivered")
        let text = pieces.map(\.text).joined().replacingOccurrences(of: "hello", with: "")
        try expect(text == long + "end", "the live text arrived changed (\(text.utf8.count) bytes, not \(long.utf8.count + 3))")
    }

    private final class Received: Sendable {
        private let box = Mutex<[LiveText]>([])
        var pieces: [LiveText] { box.withLock { $0 } }
        func add(_ piece: LiveText) { box.withLock { $0.append(piece) } }
    }

    private func tenantScopes(_ store: any RunStore) async throws {
        func configuration(_ tenant: String?) -> RunConfiguration {
            var configuration = RunConfiguration()
            configuration.tenant = tenant
            return configuration
        }
        let mine = try await store.createRun(id: RunID.make(), goal: "a", configuration: configuration("acme"), at: Self.start)
        let theirs = try await store.createRun(id: RunID.make(), goal: "b", configuration: configuration("globex"), at: Self.start)
        let local = try await store.createRun(id: RunID.make(), goal: "c", configuration: configuration(nil), at: Self.start)
        try expect(try await store.run(mine.id, tenant: "acme") != nil, "a tenant's run is found in its tenant")
        try expect(try await store.run(mine.id, tenant: "globex") == nil, "a tenant's run is not found in another")
        try expect(try await store.run(local.id, tenant: RunConfiguration.defaultTenant) != nil, "runs without a tenant are the default's")
        let listed = try await store.runs(RunQuery(tenant: "acme")).map(\.id)
        try expect(listed == [mine.id], "a listing by tenant holds that tenant's runs only (got \(listed))")

        let scoped = ScopedRunStore(store, scope: .tenant("acme"))
        try expect(try await scoped.runs(RunQuery()).map(\.id) == [mine.id], "a scoped handle lists its tenant's runs only")
        try expect(try await scoped.runs(RunQuery(tenant: "globex")).isEmpty, "a scoped handle lists nothing of another tenant")
        try expect(try await scoped.run(theirs.id) == nil, "a scoped handle does not find another tenant's run")
        for (name, attempt) in [
            ("events", { _ = try await scoped.events(of: theirs.id) }),
            ("append", { _ = try await scoped.append([.runCancelled(reason: "x")], to: theirs.id, expectedSequence: 1, at: Self.start) }),
            (
                "lease",
                { _ = try await scoped.acquireLease(on: theirs.id, owner: "x", until: Self.start + 60, replacing: nil, at: Self.start) }
            ),
        ] as [(String, () async throws -> Void)] {
            do {
                try await attempt()
                try expect(false, "a scoped handle's \(name) on another tenant's run was refused")
            } catch let error as TroupeError {
                try expect(
                    error.code == .notFound && error.message == TroupeError.noRun(theirs.id).message,
                    "another tenant's run is refused as missing by \(name), in the same words (got \(error))")
            }
        }
        try expect(try await store.events(of: theirs.id).count == 1, "nothing was written to another tenant's run")
        let created = try await scoped.createRun(id: RunID.make(), goal: "d", configuration: configuration("globex"), at: Self.start)
        try expect(created.configuration.tenant == "acme", "a run created through a scoped handle is the handle's tenant's")
        try expect(try await store.run(created.id, tenant: "acme") != nil, "the store keeps the scoped handle's tenant")
        let claimed = try await scoped.claimNextRun(owner: "w", until: Self.start + 60, maxAttempts: 5, at: Self.start)
        try expect(claimed?.summary.configuration.owningTenant == "acme", "a scoped handle claims its tenant's runs only")
    }

    private func fairClaimsAcrossTenants(_ store: any RunStore) async throws {
        var configuration = RunConfiguration()
        configuration.tenant = "busy"
        for offset in 0..<200 {
            _ = try await store.createRun(id: RunID.make(), goal: "busy", configuration: configuration, at: Self.start + Double(offset))
        }
        configuration.tenant = "quiet"
        let quiet = try await store.createRun(id: RunID.make(), goal: "quiet", configuration: configuration, at: Self.start + 500)
        var claimed: [RunID] = []
        for _ in 0..<3 {
            if let run = try await store.claimNextRun(owner: "w", until: Self.start + 3600, maxAttempts: 5, at: Self.start + 600) {
                claimed.append(run.summary.id)
            }
        }
        try expect(
            claimed.prefix(2).contains(quiet.id),
            "a tenant with one queued run gets one of the first two claims beside another tenant's 200 (claimed \(claimed))")
        let only = try await store.claimNextRun(
            owner: "w", until: Self.start + 3600, rules: ClaimRules(maxAttempts: 5, tenant: "quiet"), at: Self.start + 600)
        try expect(only == nil, "a claim limited to a tenant takes none of another's runs")
    }

    private func tenantConcurrencyLimits(_ store: any RunStore) async throws {
        var configuration = RunConfiguration()
        configuration.tenant = "limited"
        for offset in 0..<4 {
            _ = try await store.createRun(id: RunID.make(), goal: "l", configuration: configuration, at: Self.start + Double(offset))
        }
        configuration.tenant = "free"
        for offset in 0..<2 {
            _ = try await store.createRun(id: RunID.make(), goal: "f", configuration: configuration, at: Self.start + Double(offset))
        }
        let rules = ClaimRules(maxAttempts: 5, maxConcurrentRuns: ["limited": 2])
        var byTenant: [String: [LeasedRun]] = [:]
        while let run = try await store.claimNextRun(owner: "w", until: Self.start + 60, rules: rules, at: Self.start + 10) {
            byTenant[run.summary.configuration.owningTenant, default: []].append(run)
        }
        try expect(
            byTenant["limited"]?.count == 2, "a tenant's runs driven at once stop at its limit (got \(byTenant["limited"]?.count ?? 0))")
        try expect(byTenant["free"]?.count == 2, "a tenant without a limit is not held back")
        if let first = byTenant["limited"]?.first { try await store.releaseLease(first.lease, outcome: .clean) }
        let next = try await store.claimNextRun(owner: "w", until: Self.start + 60, rules: rules, at: Self.start + 11)
        try expect(next?.summary.configuration.owningTenant == "limited", "a place freed by a drive's end is taken again")
        let expired = try await store.claimNextRun(owner: "w", until: Self.start + 200, rules: rules, at: Self.start + 100)
        try expect(expired != nil, "expired leases do not count against the limit")
        let none = try await store.claimNextRun(
            owner: "w", until: Self.start + 200, rules: ClaimRules(maxAttempts: 5, defaultMaxConcurrentRuns: 0), at: Self.start + 100)
        try expect(none == nil, "a default limit applies to tenants not named")
    }

    private func keys(_ store: any RunStore) async throws {
        guard let keys = store as? any KeyStore else { return }
        let first = try APIKeys.make(tenant: "acme", role: .operator, name: "ci", expiresAt: Self.start + 3600, at: Self.start)
        let second = try APIKeys.make(tenant: "globex", role: .viewer, name: nil, expiresAt: nil, at: Self.start + 1)
        try await keys.createKey(first.record)
        try await keys.createKey(second.record)
        do {
            try await keys.createKey(first.record)
            try expect(false, "a key ID is stored once")
        } catch let error as TroupeError {
            try expect(error.code == .invalidInput, "a second key with the same ID is refused (got \(error))")
        }
        let read = try await keys.key(id: first.record.id)
        try expect(read == first.record, "a key's record reads back as stored (got \(String(describing: read)))")
        try expect(APIKeys.matches(first.key, requireRecord(read)), "the stored digest matches the key")
        try expect(!APIKeys.matches(second.key, requireRecord(read)), "another key does not match")
        try expect(try await keys.keys(tenant: nil).map(\.id) == [second.record.id, first.record.id], "keys are listed newest first")
        try expect(try await keys.keys(tenant: "acme").map(\.id) == [first.record.id], "keys are listed by tenant")
        try expect(
            try await keys.revokeKey(id: first.record.id, tenant: "globex", at: Self.start) == nil, "another tenant cannot revoke a key")
        let revoked = try await keys.revokeKey(id: first.record.id, tenant: "acme", at: Self.start + 5)
        try expect(revoked?.revokedAt == Self.start + 5 && revoked?.isActive(at: Self.start + 6) == false, "a revoked key is inactive")
        let again = try await keys.revokeKey(id: first.record.id, tenant: nil, at: Self.start + 50)
        try expect(again?.revokedAt == Self.start + 5, "revoking again keeps the first time")
        try await keys.recordKeyUse([second.record.id: Self.start + 20, "key_unknown": Self.start])
        try await keys.recordKeyUse([second.record.id: Self.start + 10])
        try expect(try await keys.key(id: second.record.id)?.lastUsedAt == Self.start + 20, "the last use never goes back in time")
        try expect(second.record.isActive(at: Self.start + 1e9), "a key without expiry does not expire")
        try expect(!first.record.isActive(at: Self.start + 3600), "a key expires at its expiry")
    }
}

/// The record, or a failure saying it is missing.
private func requireRecord(_ record: APIKeyRecord?) throws -> APIKeyRecord {
    guard let record else { throw RunStoreConformance.Failure(check: "", message: "the key's record is missing") }
    return record
}
