public import Foundation
import Logging
import NIOCore
import NIOPosix
public import TroupeCore
public import TroupeStore

/// The embedded, durable ``RunStore``: one SQLite file in WAL mode.
///
/// Several processes may open the same file (a CLI `run` and a `cancel`, say): SQLite's write lock
/// serializes them and the journal's expected sequence numbers keep them from forking a run.
///
/// Within a process, one connection serves every run. The store is an actor that runs on a thread
/// kept for SQLite (one per process, shared by every SQLite store in it): its SQLite calls are
/// plain synchronous calls there (a transaction costs no thread hops, and statements are prepared
/// once), and they never block Swift's shared cooperative threads, not even while SQLite waits out
/// another process's write lock (the stores of one process do wait for each other then). Writes
/// from concurrent runs are group-committed: every write waiting when the store's thread gets to
/// it is one transaction. JSON is encoded and decoded by the callers, off the store's thread.
public actor SQLiteRunStore: RunStore, KeyStore {
    /// Where the database lives.
    public nonisolated let path: String
    private let loop: any EventLoop
    private var database: SQLiteDatabase?
    /// Summaries of runs this process wrote, to avoid re-reading them on every append.
    private var cache: [RunID: RunSummary] = [:]

    /// The thread SQLite stores run on. Like NIO's singletons it lives as long as the process, so
    /// a store used after `close()` answers with an error instead of hanging on a stopped thread.
    private static let thread = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    /// The actor runs on the SQLite thread.
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        loop.executor.asUnownedSerialExecutor()
    }

    /// How long a write waits for another process's write lock before failing with
    /// `storageUnavailable` (which drivers retry while their lease lasts).
    private let busyTimeout: Duration
    /// Wakes this process's workers; other processes find new runs by polling.
    private let announcer = RunAnnouncer()
    private let live = LiveTextHub()

    public nonisolated func publish(_ text: LiveText) { live.deliver(text) }

    public nonisolated func liveText(of run: RunID) -> AsyncStream<LiveText> { live.stream(of: run) }

    public nonisolated func announcements() -> AsyncStream<Void> {
        announcer.stream()
    }

    private init(path: String, busyTimeout: Duration) {
        self.path = path
        self.busyTimeout = busyTimeout
        self.loop = Self.thread.next()
    }

    /// Opens (creating if needed) the database at `path` and migrates it to the current schema.
    ///
    /// What it creates is its owner's only: folders 0700, the database 0600 (SQLite gives its
    /// `-wal` and `-shm` files the database's mode). The store holds goals, file contents and
    /// command output.
    ///
    /// - Parameter busyTimeout: how long a write waits for another process's write lock before it
    ///   fails with `storageUnavailable`.
    public static func open(
        path: String,
        busyTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "troupe.store")
    ) async throws -> SQLiteRunStore {
        let url = URL(fileURLWithPath: path)
        try PrivateFiles.createDirectories(url.deletingLastPathComponent().path, for: path)
        try PrivateFiles.createFile(url.path)
        let store = SQLiteRunStore(path: url.path, busyTimeout: busyTimeout)
        do {
            try await store.configure()
        } catch {
            await store.close()
            throw TroupeError.wrap(error, as: .storage, "Cannot open the SQLite store at \(path): \(error)")
        }
        logger.debug("Opened the SQLite store", metadata: ["path": "\(url.path)"])
        return store
    }

    /// The migrations the database at `path` lacks (version and statements), without applying
    /// them (all of them when there is no database yet); a schema newer than this build is refused.
    public static func pendingMigrations(path: String) throws -> [(version: Int, statements: [String])] {
        guard FileManager.default.fileExists(atPath: path) else { return SQLiteMigrations.all }
        let database = try SQLiteDatabase(path: path, busyTimeoutMilliseconds: 10_000)
        defer { database.close() }
        let hasTable = try !database.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").isEmpty
        let current =
            hasTable ? try database.query("SELECT MAX(version) AS version FROM schema_migrations").first?["version"].integer ?? 0 : 0
        guard current <= SQLiteMigrations.latest else {
            throw TroupeError(
                .storage,
                "The store's schema is version \(current), newer than this troupe understands (\(SQLiteMigrations.latest)). Upgrade troupe."
            )
        }
        return SQLiteMigrations.all.filter { $0.version > current }
    }

    /// The schema version this build writes.
    public static var schemaVersion: Int { SQLiteMigrations.latest }

    /// Opens the store at `path`, runs `body` with it, and closes it afterwards, even on error.
    public static func withStore<T: Sendable>(
        path: String,
        logger: Logger = Logger(label: "troupe.store"),
        _ body: (SQLiteRunStore) async throws -> T
    ) async throws -> T {
        try await open(path: path, logger: logger).closing(after: body)
    }

    /// WAL mode with `synchronous = FULL`: every commit is synced to disk before it returns, so a
    /// power loss cannot take back a commit a driver acted on (one that started a side-effecting
    /// tool call, say; with `NORMAL`, the last commits before a power loss could vanish, and resume
    /// would run such a call again). Group commit spreads the sync over every write of a batch.
    /// Checkpoints come every 10,000 pages (about 40 MiB) instead of SQLite's 1,000: each run's
    /// last events page is rewritten by every append, and a checkpoint copies it once however
    /// often it changed, so fewer checkpoints copy less. After a checkpoint the WAL file is cut
    /// back to 64 MiB at most.
    private func configure() throws {
        let milliseconds = busyTimeout.components.seconds * 1000 + busyTimeout.components.attoseconds / 1_000_000_000_000_000
        let database = try SQLiteDatabase(path: path, busyTimeoutMilliseconds: Int32(clamping: milliseconds))
        self.database = database
        try database.execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 10000; PRAGMA journal_size_limit = 67108864"
        )
        try SQLiteMigrations.migrate(database)
    }

    /// Closes the database. Later calls fail with a storage error; appends waiting for a commit fail too.
    public func close() {
        database?.close()
        database = nil
        for write in pending { write.fail(TroupeError(.storage, "The SQLite store at \(path) was closed.")) }
        pending = []
    }

    /// The value of an integer pragma on the store's connection (for tests of its settings).
    package func pragma(_ name: String) throws -> Int? {
        try db().query("PRAGMA \(name)").first?.values.first?.integer
    }

    private func db() throws -> SQLiteDatabase {
        guard let database else { throw TroupeError(.storage, "The SQLite store at \(path) is closed.") }
        return database
    }

    // MARK: Runs

    public nonisolated func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) async throws -> RunSummary {
        let summary = try await create(id: id, goal: goal, configuration: configuration, lease: nil, at: time).summary
        announcer.announce()
        return summary
    }

    public nonisolated func createLeasedRun(
        id: RunID, goal: String, configuration: RunConfiguration, owner: String, until expiry: Date, at time: Date
    ) async throws -> LeasedRun {
        let created = try await create(id: id, goal: goal, configuration: configuration, lease: (owner, expiry), at: time)
        guard let lease = created.lease else { throw TroupeError(.internal, "Run \(id) was created without its lease.") }
        return LeasedRun(summary: created.summary, lease: lease, attempt: 1)
    }

    private nonisolated func create(
        id: RunID, goal: String, configuration: RunConfiguration, lease: (owner: String, expiry: Date)?, at time: Date
    ) async throws -> (summary: RunSummary, lease: Lease?) {
        let (event, payload, goal) = try StoredForm.created(goal: goal, configuration: configuration)
        let configurationJSON = try Self.encode(configuration)
        return try await inNextCommit { store, database in
            let summary = RunSummary(id: id, goal: goal, configuration: configuration, createdAt: time).applying([event], at: time)
            guard try database.query("SELECT 1 FROM runs WHERE id = ?", [.text(id.rawValue)]).isEmpty else {
                throw TroupeError(.invalidInput, "Run \(id) already exists.")
            }
            let tenant = configuration.owningTenant
            try database.query("INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)", [.text(tenant), Self.millis(time)])
            try database.query(
                """
                INSERT INTO runs (id, tenant, goal, status, created_at, updated_at, last_sequence, configuration,
                    lease_owner, lease_expires_at, lease_token, claim_attempts)
                VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)
                """,
                [
                    .text(id.rawValue), .text(tenant), .text(goal), .text(summary.status.rawValue), Self.millis(time), Self.millis(time),
                    .text(configurationJSON), lease.map { .text($0.owner) } ?? .null, lease.map { Self.millis($0.expiry) } ?? .null,
                    .integer(lease == nil ? 0 : 1), .integer(lease == nil ? 0 : 1),
                ]
            )
            try Self.insertEvents([(event.type, payload)], of: id, after: 0, at: time, in: database)
            store.cache[id] = summary
            return (summary, lease.map { Lease(runID: id, owner: $0.owner, expiresAt: $0.expiry, token: 1) })
        }
    }

    public nonisolated func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, lease: Lease?, at time: Date) async throws
        -> Int
    {
        guard !events.isEmpty else { return expectedSequence }
        let (events, payloads) = try StoredForm.masked(events)
        return try await inNextCommit { store, database in
            try store.write(events, payloads: payloads, to: run, expectedSequence: expectedSequence, lease: lease, at: time, in: database)
        }
    }

    // MARK: Group commit

    /// A write waiting for the next commit, and its caller.
    private struct PendingWrite {
        /// Does the write (on the store's thread, inside the batch's transaction) and returns how
        /// to tell its caller it succeeded, once the batch is committed.
        var perform: @Sendable (isolated SQLiteRunStore, SQLiteDatabase) throws -> @Sendable () -> Void
        var fail: @Sendable (any Error) -> Void
    }

    private var pending: [PendingWrite] = []
    private var commitScheduled = false

    /// Queues `work` for the next group commit: whoever writes while a commit is being prepared
    /// shares its transaction (and its thread hop and WAL write). Each write runs in a savepoint
    /// of its own, so one that fails (a journal conflict, a held lease, a constraint or a trigger
    /// on its rows) leaves nothing behind and fails alone. Only a failure that ends the
    /// transaction itself (a full disk, an I/O error, a lock not granted in time) fails the whole
    /// batch, which SQLite has then rolled back.
    private func inNextCommit<T: Sendable>(
        _ work: @escaping @Sendable (isolated SQLiteRunStore, SQLiteDatabase) throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            pending.append(
                PendingWrite(
                    perform: { store, database in
                        let value = try work(store, database)
                        return { continuation.resume(returning: value) }
                    },
                    fail: { continuation.resume(throwing: $0) }
                )
            )
            guard !commitScheduled else { return }
            commitScheduled = true
            // Runs after the store's thread has taken in every write already queued for it.
            loop.execute { self.assumeIsolated { $0.commitPending() } }
        }
    }

    private func commitPending() {
        commitScheduled = false
        let batch = pending
        pending = []
        guard !batch.isEmpty else { return }
        var answers: [@Sendable () -> Void] = []
        do {
            let database = try db()
            try database.transaction {
                for write in batch {
                    try database.query("SAVEPOINT write")
                    do {
                        let answer = try write.perform(self, database)
                        try database.query("RELEASE write")
                        answers.append(answer)
                    } catch {
                        // SQLite ended the transaction: nothing of the batch is kept.
                        guard database.isInTransaction else { throw error }
                        try database.query("ROLLBACK TO write")
                        try database.query("RELEASE write")
                        answers.append { write.fail(error) }
                    }
                }
            }
        } catch {
            // Nothing of the batch was written: summaries cached by its writes are not true.
            cache = [:]
            answers = batch.map { write in { write.fail(error) } }
        }
        for answer in answers { answer() }
    }

    /// One append inside an open transaction: the optimistic check, the summary, the events.
    private func write(
        _ events: [RunEvent], payloads: [String], to run: RunID, expectedSequence: Int, lease: Lease?, at time: Date,
        in database: SQLiteDatabase
    ) throws -> Int {
        let current: RunSummary
        if let cached = cache[run], cached.lastSequence == expectedSequence {
            current = cached
        } else {
            current = try loadSummary(run, in: database)
        }
        let next = current.applying(events, at: time)
        // Only what changed is encoded: an append costs no JSON beyond its events.
        let configuration: SQLiteValue =
            next.configuration == current.configuration ? .null : .text(try Self.encode(next.configuration))
        let error: SQLiteValue = try next.error.map { .text(try Self.encode($0)) } ?? .null
        let updated = try database.query(
            """
            UPDATE runs SET status = ?, updated_at = ?, last_sequence = ?, input_tokens = ?, output_tokens = ?,
                cached_tokens = ?, model_calls = ?, tool_calls = ?, answer = ?, error = ?,
                configuration = COALESCE(?, configuration), pending_approvals = ?
            WHERE id = ? AND last_sequence = ? AND (? IS NULL OR (lease_token = ? AND lease_owner IS NOT NULL)) RETURNING id
            """,
            [
                .text(next.status.rawValue), Self.millis(time), .integer(next.lastSequence), .integer(next.usage.inputTokens),
                .integer(next.usage.outputTokens), .integer(next.usage.cachedTokens), .integer(next.modelCalls),
                .integer(next.toolCalls), next.answer.map(SQLiteValue.text) ?? .null, error, configuration,
                .integer(next.pendingApprovals), .text(run.rawValue), .integer(expectedSequence), lease.map { .integer($0.token) } ?? .null,
                lease.map { .integer($0.token) } ?? .null,
            ]
        )
        guard !updated.isEmpty else {
            cache[run] = nil
            if let lease {
                let current = try currentLease(run, in: database)
                if current?.token != lease.token { throw TroupeError.leaseLost(lease, current: current) }
            }
            throw TroupeError.conflict(run, expected: expectedSequence, actual: try loadSummary(run, in: database).lastSequence)
        }
        try Self.insertEvents(zip(events, payloads).map { ($0.type, $1) }, of: run, after: expectedSequence, at: time, in: database)
        cache[run] = next
        return next.lastSequence
    }

    private static func insertEvents(
        _ events: [(type: String, payload: String)], of run: RunID, after sequence: Int, at time: Date,
        in database: SQLiteDatabase
    ) throws {
        for (offset, event) in events.enumerated() {
            try database.query(
                "INSERT INTO events (run_id, sequence, type, schema_version, recorded_at, payload) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    .text(run.rawValue), .integer(sequence + offset + 1), .text(event.type),
                    .integer(RunEventRecord.currentSchemaVersion), Self.millis(time), .text(event.payload),
                ]
            )
        }
    }

    /// A journal row, decoded by the caller off the store's thread.
    private struct EventRow: Sendable {
        var sequence: Int
        var recordedAt: Date
        var schemaVersion: Int
        var payload: String
    }

    public nonisolated func events(of run: RunID, after sequence: Int) async throws -> [RunEventRecord] {
        let rows = try await eventRows(of: run, after: sequence)
        // A long journal (a resume) is decoded on every core: decoding is most of a resume's time.
        let chunk = 256
        guard rows.count > chunk else {
            let decoder = JSONCoding.decoder()
            return try rows.map { try Self.record($0, of: run, decoder: decoder) }
        }
        return try await withThrowingTaskGroup(of: (Int, [RunEventRecord]).self) { group in
            for start in stride(from: 0, to: rows.count, by: chunk) {
                let slice = rows[start..<min(start + chunk, rows.count)]
                group.addTask {
                    // A decoder per task: one shared decoder serializes its users on its lock.
                    let decoder = JSONCoding.decoder()
                    return (start, try slice.map { try Self.record($0, of: run, decoder: decoder) })
                }
            }
            var parts: [(Int, [RunEventRecord])] = []
            for try await part in group { parts.append(part) }
            return parts.sorted { $0.0 < $1.0 }.flatMap(\.1)
        }
    }

    private static func record(_ row: EventRow, of run: RunID, decoder: JSONDecoder) throws -> RunEventRecord {
        do {
            return RunEventRecord(
                sequence: row.sequence,
                recordedAt: row.recordedAt,
                event: try decoder.decode(RunEvent.self, from: Data(row.payload.utf8)),
                schemaVersion: row.schemaVersion
            )
        } catch {
            throw TroupeError(
                .storage,
                "Event \(row.sequence) of run \(run) cannot be read: \(JSONCoding.describe(error)).",
                underlying: error
            )
        }
    }

    private func eventRows(of run: RunID, after sequence: Int) throws -> [EventRow] {
        try db().query(
            "SELECT sequence, recorded_at, schema_version, payload FROM events WHERE run_id = ? AND sequence > ? ORDER BY sequence",
            [.text(run.rawValue), .integer(sequence)]
        ).map { row in
            EventRow(
                sequence: row["sequence"].integer ?? 0, recordedAt: Self.date(row["recorded_at"]),
                schemaVersion: row["schema_version"].integer ?? 1, payload: row["payload"].string ?? "")
        }
    }

    public func run(_ id: RunID, tenant: String?) throws -> RunSummary? {
        guard let tenant else { return try fetchSummary(id, in: try db()) }
        return try db().query("SELECT \(Self.summaryColumns) FROM runs WHERE id = ? AND tenant = ?", [.text(id.rawValue), .text(tenant)])
            .first.map(Self.summary)
    }

    public func runs(_ query: RunQuery) throws -> [RunSummary] {
        var sql = "SELECT \(Self.summaryColumns) FROM runs WHERE 1 = 1"
        var binds: [SQLiteValue] = []
        if let tenant = query.tenant {
            sql += " AND tenant = ?"
            binds.append(.text(tenant))
        }
        if !query.statuses.isEmpty {
            sql += " AND status IN (" + query.statuses.map { _ in "?" }.joined(separator: ", ") + ")"
            binds += query.statuses.sorted { $0.rawValue < $1.rawValue }.map { .text($0.rawValue) }
        }
        if let after = query.createdAfter {
            sql += " AND created_at > ?"
            binds.append(Self.millis(after))
        }
        if let before = query.createdBefore {
            sql += " AND created_at < ?"
            binds.append(Self.millis(before))
        }
        if let after = query.after {
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            binds += [.integer(after.createdAtMillis), .integer(after.createdAtMillis), .text(after.id.rawValue)]
        }
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        binds.append(.integer(max(0, query.limit)))
        return try db().query(sql, binds).map(Self.summary)
    }

    // MARK: Leases

    public nonisolated func acquireLease(on run: RunID, owner: String, until expiry: Date, replacing: Lease?, at time: Date) async throws
        -> Lease
    {
        try await inNextCommit { store, database in
            guard try database.query("SELECT 1 FROM runs WHERE id = ?", [.text(run.rawValue)]).first != nil else {
                throw TroupeError.noRun(run)
            }
            if let current = try store.currentLease(run, in: database), current.expiresAt > time, current.token != replacing?.token {
                throw TroupeError.leaseHeld(current)
            }
            return try store.grant(run, to: owner, until: expiry, claim: false, in: database)
        }
    }

    /// Gives the run's lease to `owner` with the next fencing token; a claim also counts an attempt.
    private func grant(_ run: RunID, to owner: String, until expiry: Date, claim: Bool, in database: SQLiteDatabase) throws -> Lease {
        let rows = try database.query(
            """
            UPDATE runs SET lease_owner = ?, lease_expires_at = ?, lease_token = lease_token + 1,
                claim_attempts = claim_attempts + ?, claimable_at = CASE WHEN ? THEN NULL ELSE claimable_at END
            WHERE id = ? RETURNING lease_token
            """,
            [.text(owner), Self.millis(expiry), .integer(claim ? 1 : 0), .integer(claim ? 1 : 0), .text(run.rawValue)]
        )
        guard let token = rows.first?["lease_token"].integer else { throw TroupeError.noRun(run) }
        return Lease(runID: run, owner: owner, expiresAt: expiry, token: token)
    }

    public nonisolated func renewLease(_ lease: Lease, until expiry: Date) async throws -> Lease {
        try await inNextCommit { store, database in
            // Renewals never shorten a lease: one sent earlier may arrive after a later one.
            let updated = try database.query(
                """
                UPDATE runs SET lease_expires_at = MAX(lease_expires_at, ?)
                WHERE id = ? AND lease_token = ? AND lease_owner IS NOT NULL RETURNING lease_expires_at
                """,
                [Self.millis(expiry), .text(lease.runID.rawValue), .integer(lease.token)]
            )
            guard let row = updated.first else {
                throw TroupeError.leaseLost(lease, current: try store.currentLease(lease.runID, in: database))
            }
            var renewed = lease
            renewed.expiresAt = Self.date(row["lease_expires_at"])
            return renewed
        }
    }

    public nonisolated func releaseLease(_ lease: Lease, outcome: DriveOutcome) async throws {
        let (clean, retryAt): (Bool, SQLiteValue) =
            switch outcome {
            case .clean: (true, .null)
            case .failed(let retryAt): (false, Self.millis(retryAt))
            }
        _ = try await inNextCommit { _, database in
            try database.query(
                """
                UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL,
                    claim_attempts = CASE WHEN ? THEN 0 ELSE claim_attempts END, claimable_at = ?
                WHERE id = ? AND lease_token = ? AND lease_owner IS NOT NULL
                """,
                [.integer(clean ? 1 : 0), retryAt, .text(lease.runID.rawValue), .integer(lease.token)]
            )
        }
        if clean { announcer.announce() }
    }

    public func lease(of run: RunID) throws -> Lease? {
        try currentLease(run, in: try db())
    }

    private func currentLease(_ run: RunID, in database: SQLiteDatabase) throws -> Lease? {
        let rows = try database.query(
            "SELECT lease_owner, lease_expires_at, lease_token FROM runs WHERE id = ?", [.text(run.rawValue)])
        guard let row = rows.first, let owner = row["lease_owner"].string else { return nil }
        return Lease(runID: run, owner: owner, expiresAt: Self.date(row["lease_expires_at"]), token: row["lease_token"].integer ?? 0)
    }

    public nonisolated func claimNextRun(owner: String, until expiry: Date, rules: ClaimRules, at time: Date) async throws -> LeasedRun? {
        // The tenant whose turn is oldest among those with a claimable run (and below their limit
        // of runs driven at once), and that tenant's oldest claimable run.
        var sql = """
            SELECT \(Self.summaryColumns(of: "r")), r.claim_attempts, t.id AS claimed_tenant FROM tenants t
            JOIN runs r ON r.id = (
                SELECT id FROM runs WHERE tenant = t.id AND status IN ('pending', 'running')
                    AND (lease_expires_at IS NULL OR lease_expires_at <= ?) AND (claimable_at IS NULL OR claimable_at <= ?)
                    AND claim_attempts < ?
                ORDER BY created_at, id LIMIT 1)
            """
        let now = Self.millis(time)
        var binds: [SQLiteValue] = [now, now, .integer(rules.maxAttempts)]
        var conditions: [String] = []
        if let tenant = rules.tenant {
            conditions.append("t.id = ?")
            binds.append(.text(tenant))
        }
        if rules.limitsTenants {
            let (limit, limitBinds) = Self.tenantLimit(rules)
            conditions.append(
                "(SELECT COUNT(*) FROM runs WHERE tenant = t.id AND lease_owner IS NOT NULL AND lease_expires_at > ?) < \(limit)")
            binds += [now] + limitBinds
        }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY t.claim_turn, t.id LIMIT 1"
        return try await inNextCommit { [sql, binds] store, database in
            guard let row = try database.query(sql, binds).first, let id = row["id"].string, let tenant = row["claimed_tenant"].string
            else { return nil }
            try database.query(
                "UPDATE tenants SET claim_turn = (SELECT MAX(claim_turn) FROM tenants) + 1 WHERE id = ?", [.text(tenant)])
            let lease = try store.grant(RunID(id), to: owner, until: expiry, claim: true, in: database)
            return LeasedRun(summary: try Self.summary(row), lease: lease, attempt: (row["claim_attempts"].integer ?? 0) + 1)
        }
    }

    /// The SQL of a tenant's (`t.id`) limit of runs driven at once, and its values.
    private static func tenantLimit(_ rules: ClaimRules) -> (String, [SQLiteValue]) {
        var choice = "?"
        var binds: [SQLiteValue] = []
        if !rules.maxConcurrentRuns.isEmpty {
            choice = "CASE t.id"
            for (tenant, limit) in rules.maxConcurrentRuns.sorted(by: { $0.key < $1.key }) {
                choice += " WHEN ? THEN ?"
                binds += [.text(tenant), .integer(limit)]
            }
            choice += " ELSE ? END"
        }
        binds.append(rules.defaultMaxConcurrentRuns.map { .integer($0) } ?? .null)
        return ("COALESCE(\(choice), \(Int.max))", binds)
    }

    // MARK: Keys

    public nonisolated func createKey(_ record: APIKeyRecord) async throws {
        _ = try await inNextCommit { _, database in
            guard try database.query("SELECT 1 FROM api_keys WHERE id = ?", [.text(record.id)]).isEmpty else {
                throw TroupeError(.invalidInput, "A key with the ID \(record.id) already exists.")
            }
            try database.query(
                "INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)", [.text(record.tenant), Self.millis(record.createdAt)])
            try database.query(
                """
                INSERT INTO api_keys (id, prefix, name, tenant, role, digest, created_at, expires_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    .text(record.id), .text(record.prefix), record.name.map { .text($0) } ?? .null, .text(record.tenant),
                    .text(record.role.rawValue), .text(record.digest), Self.millis(record.createdAt),
                    record.expiresAt.map(Self.millis) ?? .null,
                ])
        }
    }

    public func key(id: String) throws -> APIKeyRecord? {
        try db().query("SELECT * FROM api_keys WHERE id = ?", [.text(id)]).first.map(Self.keyRecord)
    }

    public func keys(tenant: String?) throws -> [APIKeyRecord] {
        try db().query(
            "SELECT * FROM api_keys WHERE ? IS NULL OR tenant = ? ORDER BY created_at DESC, id DESC",
            [tenant.map { .text($0) } ?? .null, tenant.map { .text($0) } ?? .null]
        ).map(Self.keyRecord)
    }

    public nonisolated func revokeKey(id: String, tenant: String?, at time: Date) async throws -> APIKeyRecord? {
        try await inNextCommit { _, database in
            try database.query(
                """
                UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND (? IS NULL OR tenant = ?) RETURNING *
                """, [Self.millis(time), .text(id), tenant.map { .text($0) } ?? .null, tenant.map { .text($0) } ?? .null]
            ).first.map(Self.keyRecord)
        }
    }

    public nonisolated func recordKeyUse(_ uses: [String: Date]) async throws {
        guard !uses.isEmpty else { return }
        _ = try await inNextCommit { _, database in
            for (id, time) in uses.sorted(by: { $0.key < $1.key }) {
                try database.query(
                    "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?", [Self.millis(time), .text(id)])
            }
        }
    }

    private static func keyRecord(_ row: SQLiteRow) -> APIKeyRecord {
        func date(_ column: String) -> Date? { row[column] == .null ? nil : Self.date(row[column]) }
        return APIKeyRecord(
            id: row["id"].string ?? "", prefix: row["prefix"].string ?? "", name: row["name"].string, tenant: row["tenant"].string ?? "",
            role: Role(rawValue: row["role"].string ?? "") ?? .viewer, createdAt: Self.date(row["created_at"]),
            expiresAt: date("expires_at"), lastUsedAt: date("last_used_at"), revokedAt: date("revoked_at"),
            digest: row["digest"].string ?? "")
    }

    // MARK: Helpers

    private func fetchSummary(_ run: RunID, in database: SQLiteDatabase) throws -> RunSummary? {
        try database.query("SELECT \(Self.summaryColumns) FROM runs WHERE id = ?", [.text(run.rawValue)]).first.map(Self.summary)
    }

    private func loadSummary(_ run: RunID, in database: SQLiteDatabase) throws -> RunSummary {
        guard let summary = try fetchSummary(run, in: database) else { throw TroupeError.noRun(run) }
        return summary
    }

    static let summaryColumns = StoredForm.summaryColumns

    static func summaryColumns(of table: String) -> String { StoredForm.summaryColumns(of: table) }

    private static func summary(_ row: SQLiteRow) throws -> RunSummary {
        func decode<T: Decodable>(_ type: T.Type, _ column: String) throws -> T? {
            try StoredForm.record(type, json: row[column].string, column: column)
        }
        var summary = RunSummary(
            id: RunID(row["id"].string ?? ""),
            goal: row["goal"].string ?? "",
            configuration: try decode(RunConfiguration.self, "configuration") ?? RunConfiguration(),
            createdAt: date(row["created_at"])
        )
        summary.status = RunStatus(rawValue: row["status"].string ?? "") ?? .pending
        summary.updatedAt = date(row["updated_at"])
        summary.lastSequence = row["last_sequence"].integer ?? 0
        summary.usage = Usage(
            inputTokens: row["input_tokens"].integer ?? 0,
            outputTokens: row["output_tokens"].integer ?? 0,
            cachedTokens: row["cached_tokens"].integer ?? 0
        )
        summary.modelCalls = row["model_calls"].integer ?? 0
        summary.toolCalls = row["tool_calls"].integer ?? 0
        summary.pendingApprovals = row["pending_approvals"].integer ?? 0
        summary.answer = row["answer"].string
        summary.error = try decode(TroupeError.self, "error")
        return summary
    }

    private static func encode<T: Encodable>(_ value: T) throws -> String {
        try StoredForm.json(value)
    }

    static func millis(_ date: Date) -> SQLiteValue {
        .integer(StoredForm.millis(date))
    }

    static func date(_ value: SQLiteValue) -> Date {
        StoredForm.date(millis: value.integer ?? 0)
    }
}

/// Folders and files only their owner may read, whatever the umask.
package enum PrivateFiles {
    /// Creates `directory` and the folders above it that are missing, each 0700.
    package static func createDirectories(_ directory: String, for store: String) throws(TroupeError) {
        var missing: [String] = []
        var current = directory
        var info = stat()
        while !current.isEmpty, current != "/", stat(current, &info) != 0 {
            missing.append(current)
            current = (current as NSString).deletingLastPathComponent
        }
        for folder in missing.reversed() where mkdir(folder, 0o700) != 0 && errno != EEXIST {
            let reason = String(cString: strerror(errno))
            throw TroupeError(.storage, "Cannot create the folder \(folder) for the store at \(store): \(reason).")
        }
    }

    /// Creates `path` empty with mode 0600 if it does not exist (an empty file is an empty
    /// SQLite database).
    package static func createFile(_ path: String) throws(TroupeError) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if descriptor >= 0 {
            close(descriptor)
        } else if errno != EEXIST {
            throw TroupeError(.storage, "Cannot create the store at \(path): \(String(cString: strerror(errno))).")
        }
    }

    /// Takes group and other permissions away from `path` if it exists and is this user's.
    package static func restrict(_ path: String, to mode: mode_t) {
        var info = stat()
        guard stat(path, &info) == 0, info.st_uid == geteuid(), info.st_mode & 0o077 != 0 else { return }
        chmod(path, mode)
    }
}
