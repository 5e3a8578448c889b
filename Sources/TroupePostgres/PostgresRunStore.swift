public import Foundation
public import Logging
import PostgresNIO
import _ConnectionPoolModule
public import ServiceLifecycle
public import TroupeCore
public import TroupeStore

/// The shared, durable ``RunStore``: runs and journals in PostgreSQL, for many API nodes and
/// workers on many machines.
///
/// The database enforces what keeps a journal whole: an append updates its run's row only where
/// the row's `last_sequence` is the one the writer read (and, for a driver, where its lease's
/// fencing token is still the run's), in the transaction that inserts the events, whose
/// `(run_id, sequence)` is the primary key. Two writers can never fork a journal, whichever
/// machines they run on. Workers claim runs with `FOR UPDATE SKIP LOCKED`, and every run that
/// becomes claimable (created, or its lease released) is announced on the channel
/// ``notificationChannel`` with `NOTIFY`.
///
/// The store runs its own `PostgresClient` (a connection pool) until ``close()``.
public actor PostgresRunStore: RunStore, KeyStore {
    /// Where the store is, without its password.
    public nonisolated let location: String
    private let client: PostgresClient
    private let runner: Task<Void, Never>
    private nonisolated let live: PostgresLiveText
    private let logger: Logger
    /// Summaries of runs this process wrote, to avoid re-reading them on every append. Sound
    /// across processes: an append based on one still needs the row's `last_sequence` to match.
    private var cache: [RunID: RunSummary] = [:]
    private var closed = false

    /// The `NOTIFY` channel on which claimable runs are announced (the payload is the run's ID).
    public static let notificationChannel = "troupe_runs"

    private init(location: PostgresLocation, logger: Logger) {
        self.location = location.description
        self.logger = logger
        let client = PostgresClient(configuration: location.clientConfiguration(), backgroundLogger: logger)
        self.client = client
        self.runner = Task { await client.run() }
        self.live = PostgresLiveText(client: client, logger: logger)
    }

    /// Connects to the database at `url`, applies the migrations it lacks (under an advisory
    /// lock, so that processes starting at once do not race), and returns the store.
    public static func open(
        url: String,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger = Logger(label: "troupe.store")
    ) async throws -> PostgresRunStore {
        let location = try PostgresLocation(url: url, environment: environment)
        let store = PostgresRunStore(location: location, logger: logger)
        do {
            try await location.probe(logger: logger)
            try await PostgresMigrations.migrate(store.client, logger: logger)
        } catch {
            await store.close()
            throw store.storageError(error, "Cannot open the PostgreSQL store at \(location)")
        }
        logger.debug("Opened the PostgreSQL store", metadata: ["location": "\(location)"])
        return store
    }

    /// The migrations the database at `url` lacks (version and statements), without applying
    /// them; a schema newer than this build is refused.
    public static func pendingMigrations(
        url: String, environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger = Logger(label: "troupe.store")
    ) async throws -> [(version: Int, statements: [String])] {
        let location = try PostgresLocation(url: url, environment: environment)
        do {
            try await location.probe(logger: logger)
        } catch {
            throw storageError(error, "Cannot open the PostgreSQL store", location: location.description)
        }
        let client = PostgresClient(configuration: location.clientConfiguration(), backgroundLogger: logger)
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        return try await PostgresMigrations.pending(on: client, logger: logger)
    }

    /// Opens the store at `url`, runs `body` with it, and closes it afterwards, even on error.
    public static func withStore<T: Sendable>(
        url: String,
        logger: Logger = Logger(label: "troupe.store"),
        _ body: (PostgresRunStore) async throws -> T
    ) async throws -> T {
        try await open(url: url, logger: logger).closing(after: body)
    }

    /// `LISTEN`s on ``notificationChannel`` over a connection of its own, for as long as the
    /// stream is read (reconnecting as ``PostgresListener`` does); each (re)connection yields
    /// once, since notifications sent while it was down are gone.
    public nonisolated func announcements() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let listener = PostgresListener.listening(
            on: Self.notificationChannel, client: client, logger: logger, while: { await !self.closed }
        ) { event in
            if case .ended = event { continuation.finish() } else { continuation.yield() }
        }
        continuation.onTermination = { _ in listener.cancel() }
        return stream
    }

    /// Sends `text` to followers in every process, gathered for 50 ms (`NOTIFY troupe_text`).
    public nonisolated func publish(_ text: LiveText) { live.publish(text) }

    /// Live text of `run` from any process (`LISTEN troupe_text`, one connection per store).
    public nonisolated func liveText(of run: RunID) -> AsyncStream<LiveText> { live.stream(of: run) }

    /// Closes the connections. Later calls fail with a storage error, and so do writes still
    /// waiting for a commit.
    public func close() async {
        guard !closed else { return }
        closed = true
        let error = TroupeError(.storage, "The PostgreSQL store at \(location) was closed.")
        for write in pending { write.fail(error) }
        pending = []
        await live.stop()
        runner.cancel()
        await runner.value
    }

    /// The schema version this build writes.
    public static var latestSchemaVersion: Int { PostgresMigrations.latest }

    /// The schema version of the database (for `troupe migrate` and tests).
    public func schemaVersion() async throws -> Int {
        try await guarded("reading the schema version") { [client, logger] in
            try await PostgresMigrations.version(on: client, logger: logger)
        }
    }

    // MARK: Runs

    public func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) async throws -> RunSummary {
        try await create(id: id, goal: goal, configuration: configuration, lease: nil, at: time).summary
    }

    public func createLeasedRun(
        id: RunID, goal: String, configuration: RunConfiguration, owner: String, until expiry: Date, at time: Date
    ) async throws -> LeasedRun {
        let created = try await create(id: id, goal: goal, configuration: configuration, lease: (owner, expiry), at: time)
        guard let lease = created.lease else { throw TroupeError(.internal, "Run \(id) was created without its lease.") }
        return LeasedRun(summary: created.summary, lease: lease, attempt: 1)
    }

    private func create(
        id: RunID, goal: String, configuration: RunConfiguration, lease: (owner: String, expiry: Date)?, at time: Date
    ) async throws -> (summary: RunSummary, lease: Lease?) {
        let (event, payload, goal) = try StoredForm.created(goal: goal, configuration: configuration)
        let configurationJSON = try Self.encode(configuration)
        let summary = RunSummary(id: id, goal: goal, configuration: configuration, createdAt: time).applying([event], at: time)
        let now = Self.millis(time)
        let owner = lease?.owner
        let expiry = lease.map { Self.millis($0.expiry) }
        let token = lease == nil ? 0 : 1
        let tenant = configuration.owningTenant
        let inserted = try await transaction("creating run \(id)", run: id) { connection, logger in
            try await connection.query(
                "INSERT INTO troupe_tenants (id, created_at) VALUES (\(tenant), \(now)) ON CONFLICT DO NOTHING", logger: logger)
            let rows = try await connection.query(
                """
                INSERT INTO troupe_runs (id, tenant, goal, status, created_at, updated_at, last_sequence, configuration,
                    lease_owner, lease_expires_at, lease_token, claim_attempts)
                VALUES (\(id.rawValue), \(tenant), \(goal), \(summary.status.rawValue), \(now), \(now), 1, \(configurationJSON),
                    \(owner), \(expiry), \(token), \(token))
                ON CONFLICT (id) DO NOTHING RETURNING id
                """, logger: logger)
            guard try await rows.collect().count == 1 else { return false }
            try await Self.insertEvents([(event.type, payload)], of: id, after: 0, at: now, on: connection, logger: logger)
            if lease == nil { try await Self.announce(id, on: connection, logger: logger) }
            return true
        }
        guard inserted else { throw TroupeError(.invalidInput, "Run \(id) already exists.") }
        cache[id] = summary
        return (summary, lease.map { Lease(runID: id, owner: $0.owner, expiresAt: Self.date(Self.millis($0.expiry)), token: 1) })
    }

    public func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, lease: Lease?, at time: Date) async throws -> Int {
        guard !events.isEmpty else { return expectedSequence }
        let (events, payloads) = try StoredForm.masked(events)
        let cached = cache[run].flatMap { $0.lastSequence == expectedSequence ? $0 : nil }
        let now = Self.millis(time)
        do {
            let next = try await transaction("appending to run \(run)", run: run, oneStatement: true) { connection, logger -> RunSummary in
                let current: RunSummary
                if let cached {
                    current = cached
                } else {
                    current = try await Self.loadSummary(run, on: connection, logger: logger)
                }
                let next = current.applying(events, at: time)
                let configuration: String? = next.configuration == current.configuration ? nil : try Self.encode(next.configuration)
                let error: String? = try next.error.map { try Self.encode($0) }
                let token = lease?.token
                let statement = AppendStatement(
                    run: run.rawValue, expectedSequence: expectedSequence, token: token, summary: next, at: now,
                    configuration: configuration, error: error, sequences: events.indices.map { expectedSequence + $0 + 1 },
                    types: events.map(\.type), payloads: payloads)
                var insertedCount = 0
                do {
                    for try await _ in try await connection.execute(statement, logger: logger) { insertedCount += 1 }
                } catch let error as PSQLError where Self.retiresTheConnection(error) {
                    // PostgresNIO remembers a failed prepare on its connection and fails every later
                    // execution there with it: a connection whose append failed for a reason other
                    // than the values (a lock time-out while preparing) is closed, and the pool
                    // opens a fresh one.
                    try? await connection.close()
                    throw error
                }
                guard insertedCount == events.count else {
                    if let lease {
                        let holder = try await Self.currentLease(run, on: connection, logger: logger)
                        if holder?.token != lease.token { throw TroupeError.leaseLost(lease, current: holder) }
                    }
                    let actual = try await Self.loadSummary(run, on: connection, logger: logger).lastSequence
                    throw TroupeError.conflict(run, expected: expectedSequence, actual: actual)
                }
                return next
            }
            cache[run] = next
            return next.lastSequence
        } catch {
            cache[run] = nil
            throw error
        }
    }

    public func events(of run: RunID, after sequence: Int) async throws -> [RunEventRecord] {
        let rows = try await guarded("reading the journal of run \(run)") { [client, logger] in
            let rows = try await client.query(
                """
                SELECT sequence, recorded_at, schema_version, payload FROM troupe_events
                WHERE run_id = \(run.rawValue) AND sequence > \(sequence) ORDER BY sequence
                """, logger: logger)
            var result: [(Int, Int, Int, String)] = []
            for try await row in rows.decode((Int, Int, Int, String).self) { result.append(row) }
            return result
        }
        let decoder = JSONCoding.decoder()
        return try rows.map { sequence, recordedAt, schemaVersion, payload in
            do {
                return RunEventRecord(
                    sequence: sequence, recordedAt: Self.date(recordedAt),
                    event: try decoder.decode(RunEvent.self, from: Data(payload.utf8)), schemaVersion: schemaVersion)
            } catch {
                throw TroupeError(
                    .storage, "Event \(sequence) of run \(run) cannot be read: \(JSONCoding.describe(error)).", underlying: error)
            }
        }
    }

    public func run(_ id: RunID, tenant: String?) async throws -> RunSummary? {
        try await guarded("reading run \(id)") { [client, logger] in
            guard let tenant else {
                return try await client.withConnection { connection in try await Self.fetchSummary(id, on: connection, logger: logger) }
            }
            let rows = try await client.query(
                "SELECT \(unescaped: Self.summaryColumns) FROM troupe_runs WHERE id = \(id.rawValue) AND tenant = \(tenant)", logger: logger
            )
            return try await rows.collect().first.map(Self.summary)
        }
    }

    public func runs(_ query: RunQuery) async throws -> [RunSummary] {
        var sql = "SELECT \(Self.summaryColumns) FROM troupe_runs WHERE TRUE"
        var bindings = PostgresBindings()
        if let tenant = query.tenant {
            sql += " AND tenant = $\(bindings.count + 1)"
            bindings.append(tenant)
        }
        if !query.statuses.isEmpty {
            let statuses = query.statuses.map(\.rawValue).sorted()
            sql += " AND status = ANY($\(bindings.count + 1))"
            bindings.append(statuses)
        }
        if let after = query.createdAfter {
            sql += " AND created_at > $\(bindings.count + 1)"
            bindings.append(Self.millis(after))
        }
        if let before = query.createdBefore {
            sql += " AND created_at < $\(bindings.count + 1)"
            bindings.append(Self.millis(before))
        }
        if let after = query.after {
            sql += " AND (created_at, id) < ($\(bindings.count + 1), $\(bindings.count + 2))"
            bindings.append(after.createdAtMillis)
            bindings.append(after.id.rawValue)
        }
        sql += " ORDER BY created_at DESC, id DESC LIMIT $\(bindings.count + 1)"
        bindings.append(max(0, query.limit))
        let statement = PostgresQuery(unsafeSQL: sql, binds: bindings)
        return try await guarded("listing runs") { [client, logger] in
            let rows = try await client.query(statement, logger: logger)
            var summaries: [RunSummary] = []
            for try await row in rows { summaries.append(try Self.summary(row)) }
            return summaries
        }
    }

    // MARK: Leases

    public func acquireLease(on run: RunID, owner: String, until expiry: Date, replacing: Lease?, at time: Date) async throws -> Lease {
        try await transaction("taking the lease on run \(run)", run: run) { connection, logger in
            // The row is locked until the transaction ends: a concurrent taker waits, then sees this lease.
            let rows = try await connection.query(
                "SELECT lease_owner, lease_expires_at, lease_token FROM troupe_runs WHERE id = \(run.rawValue) FOR UPDATE",
                logger: logger)
            guard let row = try await rows.collect().first else { throw TroupeError.noRun(run) }
            if let current = try Self.lease(of: run, from: row), current.expiresAt > time, current.token != replacing?.token {
                throw TroupeError.leaseHeld(current)
            }
            return try await Self.grant(run, to: owner, until: expiry, on: connection, logger: logger)
        }
    }

    public func renewLease(_ lease: Lease, until expiry: Date) async throws -> Lease {
        try await transaction("renewing the lease on run \(lease.runID)", run: lease.runID, oneStatement: true) { connection, logger in
            // Renewals never shorten a lease: one sent earlier may arrive after a later one.
            let rows = try await connection.query(
                """
                UPDATE troupe_runs SET lease_expires_at = GREATEST(lease_expires_at, \(Self.millis(expiry)))
                WHERE id = \(lease.runID.rawValue) AND lease_token = \(lease.token) AND lease_owner IS NOT NULL
                RETURNING lease_expires_at
                """, logger: logger)
            guard let expires = try await rows.collect().first.map({ try $0.decode(Int.self) }) else {
                throw TroupeError.leaseLost(lease, current: try await Self.currentLease(lease.runID, on: connection, logger: logger))
            }
            var renewed = lease
            renewed.expiresAt = Self.date(expires)
            return renewed
        }
    }

    public func releaseLease(_ lease: Lease, outcome: DriveOutcome) async throws {
        let (clean, retryAt): (Bool, Int?) =
            switch outcome {
            case .clean: (true, nil)
            case .failed(let retryAt): (false, Self.millis(retryAt))
            }
        try await transaction("releasing the lease on run \(lease.runID)", run: lease.runID) { connection, logger in
            let rows = try await connection.query(
                """
                UPDATE troupe_runs SET lease_owner = NULL, lease_expires_at = NULL,
                    claim_attempts = CASE WHEN \(clean) THEN 0 ELSE claim_attempts END, claimable_at = \(retryAt)
                WHERE id = \(lease.runID.rawValue) AND lease_token = \(lease.token) AND lease_owner IS NOT NULL
                RETURNING status
                """, logger: logger)
            // A run handed back unfinished can be claimed at once: say so to the workers.
            if let status = try await rows.collect().first.map({ try $0.decode(String.self) }), status == "pending" || status == "running",
                retryAt == nil
            {
                try await Self.announce(lease.runID, on: connection, logger: logger)
            }
        }
    }

    public func lease(of run: RunID) async throws -> Lease? {
        try await guarded("reading the lease on run \(run)") { [client, logger] in
            try await client.withConnection { connection in try await Self.currentLease(run, on: connection, logger: logger) }
        }
    }

    public func claimNextRun(owner: String, until expiry: Date, rules: ClaimRules, at time: Date) async throws -> LeasedRun? {
        let now = Self.millis(time)
        var bindings = PostgresBindings()
        func bind(_ value: some PostgresNonThrowingEncodable & Sendable) -> String {
            bindings.append(value)
            return "$\(bindings.count)"
        }
        func bind(_ value: String?) -> String {
            bindings.append(value)
            return "$\(bindings.count)::text"
        }
        let nowParameter = bind(now)
        var tenantConditions = ["TRUE"]
        if let tenant = rules.tenant { tenantConditions.append("id = \(bind(tenant))") }
        if rules.limitsTenants {
            var limit = "NULL::bigint"
            if !rules.maxConcurrentRuns.isEmpty {
                limit = "CASE id"
                for (tenant, value) in rules.maxConcurrentRuns.sorted(by: { $0.key < $1.key }) {
                    limit += " WHEN \(bind(tenant)) THEN \(bind(value))::bigint"
                }
                limit += " ELSE NULL::bigint END"
            }
            let fallback = rules.defaultMaxConcurrentRuns.map { bind($0) + "::bigint" } ?? "NULL::bigint"
            tenantConditions.append(
                """
                (SELECT count(*) FROM troupe_runs l WHERE l.tenant = troupe_tenants.id AND l.lease_owner IS NOT NULL
                    AND l.lease_expires_at > \(nowParameter)) < COALESCE(\(limit), \(fallback), \(Int.max))
                """)
        }
        let sql = """
            WITH next AS (
                SELECT c.id AS next_id, t.id AS next_tenant
                FROM (SELECT id, claim_turn FROM troupe_tenants WHERE \(tenantConditions.joined(separator: " AND "))
                      ORDER BY claim_turn, id) t
                CROSS JOIN LATERAL (
                    SELECT id FROM troupe_runs
                    WHERE tenant = t.id AND status IN ('pending', 'running')
                        AND (lease_expires_at IS NULL OR lease_expires_at <= \(nowParameter))
                        AND (claimable_at IS NULL OR claimable_at <= \(nowParameter)) AND claim_attempts < \(bind(rules.maxAttempts))
                    ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
                ) c
                ORDER BY t.claim_turn, t.id LIMIT 1
            ), turn AS (
                -- A tenant row another claim is moving on keeps that claim's turn (no waiting).
                UPDATE troupe_tenants SET claim_turn = nextval('troupe_claim_turns')
                WHERE id = (SELECT id FROM troupe_tenants WHERE id = (SELECT next_tenant FROM next) FOR UPDATE SKIP LOCKED)
            )
            UPDATE troupe_runs SET lease_owner = \(bind(owner)), lease_expires_at = \(bind(Self.millis(expiry))),
                lease_token = lease_token + 1, claim_attempts = claim_attempts + 1, claimable_at = NULL
            FROM next WHERE id = next.next_id
            RETURNING \(Self.summaryColumns(of: "troupe_runs")), claim_attempts, lease_token, lease_expires_at
            """
        let statement = PostgresQuery(unsafeSQL: sql, binds: bindings)
        let limited = rules.limitsTenants
        return try await transaction("claiming a run", oneStatement: !limited, claim: true) { connection, logger -> LeasedRun? in
            if limited {
                // Limited claims take turns across every worker, until their commit: two claims
                // at once cannot both take a tenant's last free place. The lock is its own
                // statement, so that the claim's snapshot is taken after the lock is held and
                // sees the leases of the claims committed meanwhile.
                try await connection.query("SELECT pg_advisory_xact_lock(\(PostgresMigrations.lockKey + 1))", logger: logger)
            }
            // One statement: the tenant whose turn is oldest among those with a claimable run
            // (runs other workers are claiming right now are skipped, not waited for), and its
            // oldest claimable run, leased to this worker.
            let rows = try await connection.query(statement, logger: logger)
            guard let row = try await rows.collect().first else { return nil }
            let summary = try Self.summary(row)
            let columns = row.makeRandomAccess()
            let lease = Lease(
                runID: summary.id, owner: owner, expiresAt: Self.date(try columns["lease_expires_at"].decode(Int.self)),
                token: try columns["lease_token"].decode(Int.self))
            return LeasedRun(summary: summary, lease: lease, attempt: try columns["claim_attempts"].decode(Int.self))
        }
    }

    // MARK: Keys

    public func createKey(_ record: APIKeyRecord) async throws {
        let created = Self.millis(record.createdAt)
        let expires = record.expiresAt.map(Self.millis)
        let inserted = try await transaction("creating key \(record.id)") { connection, logger in
            try await connection.query(
                "INSERT INTO troupe_tenants (id, created_at) VALUES (\(record.tenant), \(created)) ON CONFLICT DO NOTHING", logger: logger)
            let rows = try await connection.query(
                """
                INSERT INTO troupe_api_keys (id, prefix, name, tenant, role, digest, created_at, expires_at)
                VALUES (\(record.id), \(record.prefix), \(record.name), \(record.tenant), \(record.role.rawValue), \(record.digest),
                    \(created), \(expires))
                ON CONFLICT (id) DO NOTHING RETURNING id
                """, logger: logger)
            return try await rows.collect().count == 1
        }
        guard inserted else { throw TroupeError(.invalidInput, "A key with the ID \(record.id) already exists.") }
    }

    public func key(id: String) async throws -> APIKeyRecord? {
        try await keyRecords("reading key \(id)", "SELECT \(unescaped: Self.keyColumns) FROM troupe_api_keys WHERE id = \(id)").first
    }

    public func keys(tenant: String?) async throws -> [APIKeyRecord] {
        try await keyRecords(
            "listing keys",
            """
            SELECT \(unescaped: Self.keyColumns) FROM troupe_api_keys WHERE \(tenant)::text IS NULL OR tenant = \(tenant)
            ORDER BY created_at DESC, id DESC
            """)
    }

    public func revokeKey(id: String, tenant: String?, at time: Date) async throws -> APIKeyRecord? {
        let now = Self.millis(time)
        return try await transaction("revoking key \(id)", oneStatement: true) { connection, logger in
            let rows = try await connection.query(
                """
                UPDATE troupe_api_keys SET revoked_at = COALESCE(revoked_at, \(now))
                WHERE id = \(id) AND (\(tenant)::text IS NULL OR tenant = \(tenant))
                RETURNING \(unescaped: Self.keyColumns)
                """, logger: logger)
            return try await rows.collect().first.map(Self.keyRecord)
        }
    }

    public func recordKeyUse(_ uses: [String: Date]) async throws {
        guard !uses.isEmpty else { return }
        let sorted = uses.sorted { $0.key < $1.key }
        let ids = sorted.map(\.key)
        let times = sorted.map { Self.millis($0.value) }
        _ = try await transaction("recording the use of keys", oneStatement: true) { connection, logger in
            try await connection.query(
                """
                UPDATE troupe_api_keys k SET last_used_at = GREATEST(COALESCE(k.last_used_at, 0), u.at)
                FROM unnest(\(ids)::text[], \(times)::bigint[]) AS u(id, at) WHERE k.id = u.id
                """, logger: logger)
        }
    }

    private func keyRecords(_ what: String, _ query: PostgresQuery) async throws -> [APIKeyRecord] {
        try await guarded(what) { [client, logger] in
            try await client.query(query, logger: logger).collect().map(Self.keyRecord)
        }
    }

    static let keyColumns = "id, prefix, name, tenant, role, digest, created_at, expires_at, last_used_at, revoked_at"

    private static func keyRecord(_ row: PostgresRow) throws -> APIKeyRecord {
        let (id, prefix, name, tenant, role, digest, created, expires, used, revoked) = try row.decode(
            (String, String, String?, String, String, String, Int, Int?, Int?, Int?).self)
        return APIKeyRecord(
            id: id, prefix: prefix, name: name, tenant: tenant, role: Role(rawValue: role) ?? .viewer, createdAt: date(created),
            expiresAt: expires.map(date), lastUsedAt: used.map(date), revokedAt: revoked.map(date), digest: digest)
    }

    // MARK: Helpers

    // MARK: Group commit

    /// A write waiting for the next commit, and its caller.
    private struct PendingWrite: Sendable {
        var what: String
        /// The run whose row the write locks (`nil`: a claim, which waits for no lock, or a write of
        /// other tables).
        var run: String?
        /// A claim: last in its batch, after every write that may wait for a lock, so that a
        /// batch holding the claims' advisory lock never waits for another batch.
        var isClaim = false
        /// Whether the write is one statement (reads aside): alone in a batch, it needs no
        /// transaction of its own around it (one round trip instead of four).
        var isOneStatement: Bool
        /// Does the write (inside the batch's transaction) and returns how to tell its caller it
        /// succeeded, once the batch is committed.
        var perform: @Sendable (PostgresConnection, Logger) async throws -> @Sendable () -> Void
        var fail: @Sendable (any Error) -> Void
    }

    private var pending: [PendingWrite] = []
    /// Group commits under way, each on a connection of its own.
    private var flushers = 0
    static let maxBatch = 50
    /// Group commits at once: while one waits for its round trips, the next batch is on its way.
    /// (A driver waits for each append before the next, so one run's appends are never
    /// reordered; its lease renewals may share another batch, which the fence makes harmless.)
    package static let maxConcurrentBatches = 4
    /// Transactions the group commit has run (for tests of the batching).
    package private(set) var batches = 0

    /// Runs `body` in the next group commit: the writes that arrive while batches are being
    /// committed share the next transaction (one round of `BEGIN`/`COMMIT` and one WAL flush for
    /// all of them; up to ``maxConcurrentBatches`` at once). A write refused by the rules (a
    /// journal conflict, a held lease) writes nothing and fails alone; a write the database
    /// refuses (a value it cannot store) aborts the transaction, and the batch's writes are then
    /// run again one by one, so that it fails alone too. Only a failure of the transaction itself
    /// (the connection lost, the commit refused) fails the whole batch, which PostgreSQL has then
    /// rolled back. A single-statement write (`oneStatement`) alone in its batch runs without a
    /// transaction around it. The caller hears of success only after the commit.
    private func transaction<T: Sendable>(
        _ what: String, run: RunID? = nil, oneStatement: Bool = false, claim: Bool = false,
        _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws -> T {
        guard !closed else { throw TroupeError(.storage, "The PostgreSQL store at \(location) is closed.") }
        return try await withCheckedThrowingContinuation { continuation in
            pending.append(
                PendingWrite(
                    what: what, run: run?.rawValue, isClaim: claim, isOneStatement: oneStatement,
                    perform: { connection, logger in
                        let value = try await body(connection, logger)
                        return { continuation.resume(returning: value) }
                    },
                    fail: { continuation.resume(throwing: $0) }))
            guard flushers < Self.maxConcurrentBatches else { return }
            flushers += 1
            Task { await self.flush() }
        }
    }

    private func flush() async {
        while !pending.isEmpty {
            // At most 50 writes per transaction: PostgreSQL caches 64 subtransactions (savepoints)
            // per backend, and more slow the whole server down.
            let batch = Array(pending.prefix(Self.maxBatch))
            pending.removeFirst(batch.count)
            let answers = await commit(batch)
            for answer in answers { answer() }
        }
        flushers -= 1
    }

    private func commit(_ batch: [PendingWrite]) async -> [@Sendable () -> Void] {
        batches += 1
        guard !closed else {
            let error = TroupeError(.storage, "The PostgreSQL store at \(location) was closed.")
            return batch.map { write in { write.fail(error) } }
        }
        if batch.count == 1, let write = batch.first { return [await alone(write)] }
        // Rows locked in one order in every batch: batches under way at once (a driver renews
        // its lease while it appends) never wait for each other in a circle.
        let batch = batch.sorted { ($0.isClaim ? 1 : 0, $0.run ?? "\u{10FFFF}") < ($1.isClaim ? 1 : 0, $1.run ?? "\u{10FFFF}") }
        do {
            return try await client.withTransaction(logger: logger) { [logger] connection in
                var answers: [@Sendable () -> Void] = []
                for write in batch {
                    do {
                        answers.append(try await write.perform(connection, logger))
                    } catch let error as TroupeError {
                        // Refused by the rules (a conflict, a held lease) before it wrote anything:
                        // the transaction is sound, and goes on with the others.
                        answers.append { write.fail(error) }
                    }
                }
                return answers
            }
        } catch let error as PostgresTransactionError
            where (error.closureError as? PSQLError)?.code == .server && error.rollbackError == nil && error.commitError == nil
        {
            // The database refused a statement of one write (a value it cannot store), and with it
            // the whole transaction, which it rolled back: each write again on its own, so that
            // only that one fails.
            var answers: [@Sendable () -> Void] = []
            for write in batch { answers.append(await alone(write)) }
            return answers
        } catch {
            // Nothing of the batch was written: summaries cached for its runs are not true.
            cache = [:]
            let failure = Self.storageError(error, "Failed while committing \(batch.count) write(s)", location: location)
            return batch.map { write in { write.fail(failure) } }
        }
    }

    /// Runs one write in a transaction of its own (a single statement is one already).
    private func alone(_ write: PendingWrite) async -> @Sendable () -> Void {
        do {
            if write.isOneStatement {
                return try await client.withConnection { [logger] connection in try await write.perform(connection, logger) }
            }
            return try await client.withTransaction(logger: logger) { [logger] connection in
                try await write.perform(connection, logger)
            }
        } catch {
            // A refusal by the rules (a conflict, a held lease) comes out as it is.
            let failure = Self.storageError(error, "Failed while \(write.what)", location: location)
            if failure.underlying != nil { cache = [:] }
            return { write.fail(failure) }
        }
    }

    /// Whether an error of a prepared statement leaves its connection unusable for it: any server
    /// error but one about the values bound (classes 22, data, and 23, integrity).
    static func retiresTheConnection(_ error: PSQLError) -> Bool {
        guard error.code == .server else { return false }
        let state = error.serverInfo?[.sqlState] ?? ""
        return !(state.hasPrefix("22") || state.hasPrefix("23"))
    }

    /// Runs `body`, turning a database failure into a `storage` error (`storageUnavailable` when
    /// the database cannot be reached, which drivers retry while their lease lasts).
    private func guarded<T: Sendable>(_ what: String, _ body: @Sendable () async throws -> T) async throws -> T {
        guard !closed else { throw TroupeError(.storage, "The PostgreSQL store at \(location) is closed.") }
        do {
            return try await body()
        } catch let error as TroupeError {
            throw error
        } catch {
            throw storageError(error, "Failed while \(what)")
        }
    }

    nonisolated private func storageError(_ error: any Error, _ context: String) -> TroupeError {
        Self.storageError(error, context, location: location)
    }

    /// A database failure as a `storage` error (`storageUnavailable` when the database cannot be
    /// reached); a ``TroupeError`` (a conflict, a held lease) as it is.
    private static func storageError(_ error: any Error, _ context: String, location: String) -> TroupeError {
        if let error = error as? TroupeError { return error }
        if let error = error as? PostgresTransactionError,
            let cause = error.closureError ?? error.commitError ?? error.beginError ?? error.rollbackError
        {
            return storageError(cause, context, location: location)
        }
        if error is ConnectionPoolError {
            // The pool gave up connecting for now (its circuit breaker), or was shut down.
            return TroupeError(.storageUnavailable, "\(context): the database at \(location) cannot be reached.", underlying: error)
        }
        guard let error = error as? PSQLError else {
            return TroupeError(.storage, "\(context) (\(location)): \(error).", underlying: error)
        }
        let unreachable: Set<PSQLError.Code> = [
            .connectionError, .serverClosedConnection, .clientClosedConnection, .poolClosed, .uncleanShutdown,
        ]
        if unreachable.contains(error.code) {
            return TroupeError(
                .storageUnavailable, "\(context): the database at \(location) cannot be reached (\(error.code)).", underlying: error)
        }
        let message = error.serverInfo?[.message] ?? "\(error.code)"
        let state = error.serverInfo?[.sqlState] ?? ""
        // Passing conditions a retry may get past: connection trouble (08), too many connections
        // or no resources (53), a server shutting down (57P0x), a lock or statement time-out
        // (55P03, 57014), a deadlock or serialization failure (40P01, 40001).
        let transient =
            state.hasPrefix("08") || state.hasPrefix("53") || state.hasPrefix("57P0")
            || ["55P03", "57014", "40P01", "40001"].contains(state)
        let code: TroupeError.Code = transient ? .storageUnavailable : .storage
        return TroupeError(code, "\(context) (\(location)): \(message)\(state.isEmpty ? "" : " (SQLSTATE \(state))").", underlying: error)
    }

    private static func insertEvents(
        _ events: [(type: String, payload: String)], of run: RunID, after sequence: Int, at time: Int,
        on connection: PostgresConnection, logger: Logger
    ) async throws {
        // One statement for the whole batch: arrays of the columns, unnested.
        let sequences = events.indices.map { sequence + $0 + 1 }
        let types = events.map(\.type)
        let payloads = events.map(\.payload)
        try await connection.query(
            """
            INSERT INTO troupe_events (run_id, sequence, type, schema_version, recorded_at, payload)
            SELECT \(run.rawValue), s, t, \(RunEventRecord.currentSchemaVersion), \(time), p
            FROM unnest(\(sequences)::bigint[], \(types)::text[], \(payloads)::text[]) AS e (s, t, p)
            """, logger: logger)
    }

    private static func announce(_ run: RunID, on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("SELECT pg_notify(\(notificationChannel), \(run.rawValue))", logger: logger)
    }

    private static func grant(
        _ run: RunID, to owner: String, until expiry: Date, on connection: PostgresConnection, logger: Logger
    ) async throws -> Lease {
        let expires = millis(expiry)
        let rows = try await connection.query(
            """
            UPDATE troupe_runs SET lease_owner = \(owner), lease_expires_at = \(expires), lease_token = lease_token + 1
            WHERE id = \(run.rawValue) RETURNING lease_token
            """, logger: logger)
        guard let token = try await rows.collect().first.map({ try $0.decode(Int.self) }) else {
            throw TroupeError(.notFound, "No run '\(run)' in this store.")
        }
        return Lease(runID: run, owner: owner, expiresAt: date(expires), token: token)
    }

    private static func currentLease(_ run: RunID, on connection: PostgresConnection, logger: Logger) async throws -> Lease? {
        let rows = try await connection.query(
            "SELECT lease_owner, lease_expires_at, lease_token FROM troupe_runs WHERE id = \(run.rawValue)", logger: logger)
        return try await rows.collect().first.flatMap { try lease(of: run, from: $0) }
    }

    private static func lease(of run: RunID, from row: PostgresRow) throws -> Lease? {
        let (owner, expires, token) = try row.decode((String?, Int?, Int).self)
        guard let owner else { return nil }
        return Lease(runID: run, owner: owner, expiresAt: date(expires ?? 0), token: token)
    }

    private static func fetchSummary(_ run: RunID, on connection: PostgresConnection, logger: Logger) async throws -> RunSummary? {
        let rows = try await connection.query(
            "SELECT \(unescaped: summaryColumns) FROM troupe_runs WHERE id = \(run.rawValue)", logger: logger)
        return try await rows.collect().first.map(summary)
    }

    private static func loadSummary(_ run: RunID, on connection: PostgresConnection, logger: Logger) async throws -> RunSummary {
        guard let summary = try await fetchSummary(run, on: connection, logger: logger) else { throw TroupeError.noRun(run) }
        return summary
    }

    static let summaryColumns = StoredForm.summaryColumns

    static func summaryColumns(of table: String) -> String { StoredForm.summaryColumns(of: table) }

    private static func summary(_ row: PostgresRow) throws -> RunSummary {
        let columns = row.makeRandomAccess()
        func column<T: PostgresDecodable>(_ name: String, _ type: T.Type) throws -> T { try columns[name].decode(T.self) }
        func decode<T: Decodable>(_ type: T.Type, _ text: String?, _ column: String) throws -> T? {
            try StoredForm.record(type, json: text, column: column)
        }
        var summary = RunSummary(
            id: RunID(try column("id", String.self)), goal: try column("goal", String.self),
            configuration: try decode(RunConfiguration.self, try column("configuration", String.self), "configuration")
                ?? RunConfiguration(),
            createdAt: date(try column("created_at", Int.self)))
        summary.status = RunStatus(rawValue: try column("status", String.self)) ?? .pending
        summary.updatedAt = date(try column("updated_at", Int.self))
        summary.lastSequence = try column("last_sequence", Int.self)
        summary.usage = Usage(
            inputTokens: try column("input_tokens", Int.self), outputTokens: try column("output_tokens", Int.self),
            cachedTokens: try column("cached_tokens", Int.self))
        summary.modelCalls = try column("model_calls", Int.self)
        summary.toolCalls = try column("tool_calls", Int.self)
        summary.pendingApprovals = try column("pending_approvals", Int.self)
        summary.answer = try column("answer", String?.self)
        summary.error = try decode(TroupeError.self, try column("error", String?.self), "error")
        return summary
    }

    private static func encode<T: Encodable>(_ value: T) throws -> String {
        try StoredForm.json(value)
    }

    static func millis(_ date: Date) -> Int {
        StoredForm.millis(date)
    }

    static func date(_ millis: Int) -> Date {
        StoredForm.date(millis: millis)
    }
}

/// The store as a ServiceLifecycle service, for a `ServiceGroup` that owns its lifetime: put it
/// first, so that it is shut down last — after the API and the workers have drained — and its
/// `PostgresClient` (started when the store opened, since migrations run then) closes once
/// nothing needs it.
extension PostgresRunStore: Service {
    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }
}

/// An append as one prepared statement (parsed and planned once per connection): the run's row
/// moves on only from the journal end the writer read (and under its lease), and the events go
/// in only where it did. Its rows are the sequence numbers inserted.
struct AppendStatement: PostgresPreparedStatement {
    static let name = "troupe_append_v2"
    static let sql = """
        WITH updated AS (
            UPDATE troupe_runs SET status = $1::text, updated_at = $2::bigint, last_sequence = $3::bigint,
                input_tokens = $4::bigint, output_tokens = $5::bigint, cached_tokens = $6::bigint, model_calls = $7::bigint,
                tool_calls = $8::bigint, answer = $9::text, error = $10::text, configuration = COALESCE($11::text, configuration),
                pending_approvals = $19::bigint
            WHERE id = $12::text AND last_sequence = $13::bigint
                AND ($14::bigint IS NULL OR (lease_token = $14::bigint AND lease_owner IS NOT NULL))
            RETURNING id
        )
        INSERT INTO troupe_events (run_id, sequence, type, schema_version, recorded_at, payload)
        SELECT updated.id, e.s, e.t, $15::bigint, $2::bigint, e.p
        FROM updated, unnest($16::bigint[], $17::text[], $18::text[]) AS e (s, t, p)
        RETURNING sequence
        """

    var run: String
    var expectedSequence: Int
    var token: Int?
    var summary: RunSummary
    var at: Int
    var configuration: String?
    var error: String?
    var sequences: [Int]
    var types: [String]
    var payloads: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 19)
        bindings.append(summary.status.rawValue)
        bindings.append(at)
        bindings.append(summary.lastSequence)
        bindings.append(summary.usage.inputTokens)
        bindings.append(summary.usage.outputTokens)
        bindings.append(summary.usage.cachedTokens)
        bindings.append(summary.modelCalls)
        bindings.append(summary.toolCalls)
        try bindings.append(summary.answer)
        try bindings.append(error)
        try bindings.append(configuration)
        bindings.append(run)
        bindings.append(expectedSequence)
        try bindings.append(token)
        bindings.append(RunEventRecord.currentSchemaVersion)
        bindings.append(sequences)
        bindings.append(types)
        bindings.append(payloads)
        bindings.append(summary.pendingApprovals)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int { try row.decode(Int.self) }
}
