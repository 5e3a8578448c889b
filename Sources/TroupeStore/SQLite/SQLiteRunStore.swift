public import Foundation
import Logging
import NIOCore
import NIOPosix
public import TroupeCore

/// The embedded, durable ``RunStore``: one SQLite file in WAL mode.
///
/// Several processes may open the same file (a CLI `run` and a `cancel`, say): SQLite's write lock
/// serializes them and the journal's expected sequence numbers keep them from forking a run.
///
/// Within a process, one connection serves every run. The store is an actor that runs on a thread
/// kept for SQLite (one per process, shared by every SQLite store in it): its SQLite calls are
/// plain synchronous calls there (a transaction costs no thread hops, and statements are prepared
/// once), and they never block Swift's shared cooperative threads, not even while SQLite waits out
/// another process's write lock. Appends from concurrent runs are
/// group-committed: everything waiting when the store's thread gets to it is one transaction.
/// JSON is encoded and decoded by the callers, off the store's thread.
public actor SQLiteRunStore: RunStore {
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

    private init(path: String) {
        self.path = path
        self.loop = Self.thread.next()
    }

    /// Opens (creating if needed) the database at `path` and migrates it to the current schema.
    public static func open(path: String, logger: Logger = Logger(label: "troupe.store")) async throws -> SQLiteRunStore {
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw TroupeError(.storage, "Cannot create the directory for the store at \(path): \(error.localizedDescription)")
        }
        let store = SQLiteRunStore(path: url.path)
        do {
            try await store.configure()
        } catch {
            await store.close()
            throw TroupeError.wrap(error, as: .storage, "Cannot open the SQLite store at \(path): \(error)")
        }
        logger.debug("Opened the SQLite store", metadata: ["path": "\(url.path)"])
        return store
    }

    /// Opens the store at `path`, runs `body` with it, and closes it afterwards, even on error.
    public static func withStore<T: Sendable>(
        path: String,
        logger: Logger = Logger(label: "troupe.store"),
        _ body: (SQLiteRunStore) async throws -> T
    ) async throws -> T {
        let store = try await open(path: path, logger: logger)
        do {
            let result = try await body(store)
            await store.close()
            return result
        } catch {
            await store.close()
            throw error
        }
    }

    private func configure() throws {
        let database = try SQLiteDatabase(path: path, busyTimeoutMilliseconds: 10_000)
        self.database = database
        try database.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
        try SQLiteMigrations.migrate(database)
    }

    /// Closes the database. Later calls fail with a storage error; appends waiting for a commit fail too.
    public func close() {
        database?.close()
        database = nil
        for waiting in pending { waiting.continuation.resume(throwing: TroupeError(.storage, "The SQLite store at \(path) was closed.")) }
        pending = []
    }

    private func db() throws -> SQLiteDatabase {
        guard let database else { throw TroupeError(.storage, "The SQLite store at \(path) is closed.") }
        return database
    }

    // MARK: Runs

    public nonisolated func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) async throws -> RunSummary {
        let event = RunEvent.runCreated(goal: goal, configuration: configuration)
        let payload = try Self.encode(event)
        let configurationJSON = try Self.encode(configuration)
        return try await insertRun(
            id: id, goal: goal, configuration: configuration, event: event, payload: payload,
            configurationJSON: configurationJSON, at: time)
    }

    private func insertRun(
        id: RunID, goal: String, configuration: RunConfiguration, event: RunEvent, payload: String, configurationJSON: String, at time: Date
    ) throws -> RunSummary {
        let summary = RunSummary(id: id, goal: goal, configuration: configuration, createdAt: time).applying([event], at: time)
        let database = try db()
        try database.transaction {
            guard try database.query("SELECT 1 FROM runs WHERE id = ?", [.text(id.rawValue)]).isEmpty else {
                throw TroupeError(.invalidInput, "Run \(id) already exists.")
            }
            try database.query(
                """
                INSERT INTO runs (id, goal, status, created_at, updated_at, last_sequence, configuration)
                VALUES (?, ?, ?, ?, ?, 1, ?)
                """,
                [
                    .text(id.rawValue), .text(goal), .text(summary.status.rawValue), Self.millis(time), Self.millis(time),
                    .text(configurationJSON),
                ]
            )
            try insertEvents([(event.type, payload)], of: id, after: 0, at: time, in: database)
        }
        cache[id] = summary
        return summary
    }

    /// An append waiting for the next group commit, with its caller.
    private struct PendingAppend {
        var run: RunID
        var events: [RunEvent]
        var payloads: [String]
        var expectedSequence: Int
        var time: Date
        var continuation: CheckedContinuation<Int, any Error>
    }

    private var pending: [PendingAppend] = []
    private var commitScheduled = false

    public nonisolated func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, at time: Date) async throws -> Int {
        guard !events.isEmpty else { return expectedSequence }
        let payloads = try events.map(Self.encode)
        return try await appendInNextCommit(run: run, events: events, payloads: payloads, expectedSequence: expectedSequence, at: time)
    }

    private func appendInNextCommit(run: RunID, events: [RunEvent], payloads: [String], expectedSequence: Int, at time: Date) async throws
        -> Int
    {
        try await withCheckedThrowingContinuation { continuation in
            pending.append(
                PendingAppend(
                    run: run, events: events, payloads: payloads, expectedSequence: expectedSequence, time: time, continuation: continuation
                )
            )
            guard !commitScheduled else { return }
            commitScheduled = true
            // Runs after the store's thread has taken in every append already queued for it.
            loop.execute { self.assumeIsolated { $0.commitPending() } }
        }
    }

    /// Writes every waiting append in one transaction. A conflicting append fails alone; any other
    /// failure rolls the whole batch back and fails every append in it, so nothing is half-written.
    private func commitPending() {
        commitScheduled = false
        let batch = pending
        pending = []
        guard !batch.isEmpty else { return }
        var results: [Result<Int, any Error>] = []
        do {
            let database = try db()
            var written: [RunID: RunSummary] = [:]
            results = try database.transaction {
                try batch.map { request in
                    do {
                        let summary = try write(request, cached: written[request.run] ?? cache[request.run], in: database)
                        written[request.run] = summary
                        return .success(summary.lastSequence)
                    } catch let error as TroupeError where error.code == .journalConflict || error.code == .notFound {
                        return .failure(error)
                    }
                }
            }
            cache.merge(written) { _, new in new }
        } catch {
            results = batch.map { _ in .failure(error) }
            for request in batch { cache[request.run] = nil }
        }
        for (request, result) in zip(batch, results) { request.continuation.resume(with: result) }
    }

    /// One append inside an open transaction: the optimistic check, the summary, the events.
    private func write(_ request: PendingAppend, cached: RunSummary?, in database: SQLiteDatabase) throws -> RunSummary {
        let run = request.run
        let current: RunSummary
        if let cached, cached.lastSequence == request.expectedSequence {
            current = cached
        } else {
            current = try loadSummary(run, in: database)
        }
        let next = current.applying(request.events, at: request.time)
        // Only what changed is encoded: an append costs no JSON beyond its events.
        let configuration: SQLiteValue =
            next.configuration == current.configuration ? .null : .text(try Self.encode(next.configuration))
        let error: SQLiteValue = try next.error.map { .text(try Self.encode($0)) } ?? .null
        let updated = try database.query(
            """
            UPDATE runs SET status = ?, updated_at = ?, last_sequence = ?, input_tokens = ?, output_tokens = ?,
                cached_tokens = ?, model_calls = ?, tool_calls = ?, answer = ?, error = ?,
                configuration = COALESCE(?, configuration)
            WHERE id = ? AND last_sequence = ? RETURNING id
            """,
            [
                .text(next.status.rawValue), Self.millis(request.time), .integer(next.lastSequence), .integer(next.usage.inputTokens),
                .integer(next.usage.outputTokens), .integer(next.usage.cachedTokens), .integer(next.modelCalls),
                .integer(next.toolCalls), next.answer.map(SQLiteValue.text) ?? .null, error, configuration,
                .text(run.rawValue), .integer(request.expectedSequence),
            ]
        )
        guard !updated.isEmpty else {
            cache[run] = nil
            throw TroupeError.conflict(run, expected: request.expectedSequence, actual: try loadSummary(run, in: database).lastSequence)
        }
        try insertEvents(
            zip(request.events, request.payloads).map { ($0.type, $1) }, of: run, after: request.expectedSequence, at: request.time,
            in: database)
        return next
    }

    private func insertEvents(
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
        try await eventRows(of: run, after: sequence).map { row in
            do {
                return RunEventRecord(
                    sequence: row.sequence,
                    recordedAt: row.recordedAt,
                    event: try JSONCoding.decode(RunEvent.self, from: Data(row.payload.utf8)),
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

    public func run(_ id: RunID) throws -> RunSummary? {
        try fetchSummary(id, in: try db())
    }

    public func runs(_ query: RunQuery) throws -> [RunSummary] {
        var sql = "SELECT \(Self.summaryColumns) FROM runs WHERE 1 = 1"
        var binds: [SQLiteValue] = []
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
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        binds.append(.integer(max(0, query.limit)))
        return try db().query(sql, binds).map(Self.summary)
    }

    // MARK: Leases

    public func acquireLease(on run: RunID, owner: String, until expiry: Date, force: Bool, at time: Date) throws -> Lease {
        let database = try db()
        return try database.transaction {
            let rows = try database.query("SELECT lease_owner, lease_expires_at FROM runs WHERE id = ?", [.text(run.rawValue)])
            guard let row = rows.first else { throw TroupeError(.notFound, "No run '\(run)' in this store.") }
            if let holder = row["lease_owner"].string, holder != owner, !force {
                let expires = Self.date(row["lease_expires_at"])
                if expires > time { throw TroupeError.leaseHeld(Lease(runID: run, owner: holder, expiresAt: expires)) }
            }
            try database.query(
                "UPDATE runs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?",
                [.text(owner), Self.millis(expiry), .text(run.rawValue)]
            )
            return Lease(runID: run, owner: owner, expiresAt: expiry)
        }
    }

    public func renewLease(on run: RunID, owner: String, until expiry: Date) throws {
        let updated = try db().query(
            "UPDATE runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? RETURNING id",
            [Self.millis(expiry), .text(run.rawValue), .text(owner)]
        )
        if updated.isEmpty {
            throw TroupeError(.leaseHeld, "The lease on run \(run) was taken over by another driver; this one stops.")
        }
    }

    public func releaseLease(on run: RunID, owner: String) throws {
        try db().query(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
            [.text(run.rawValue), .text(owner)]
        )
    }

    public func lease(of run: RunID) throws -> Lease? {
        let rows = try db().query("SELECT lease_owner, lease_expires_at FROM runs WHERE id = ?", [.text(run.rawValue)])
        guard let row = rows.first, let owner = row["lease_owner"].string else { return nil }
        return Lease(runID: run, owner: owner, expiresAt: Self.date(row["lease_expires_at"]))
    }

    public func claimNextRun(owner: String, until expiry: Date, at time: Date) throws -> RunSummary? {
        let database = try db()
        return try database.transaction {
            let rows = try database.query(
                """
                SELECT \(Self.summaryColumns) FROM runs
                WHERE status IN ('pending', 'running') AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
                ORDER BY created_at, id LIMIT 1
                """,
                [Self.millis(time)]
            )
            guard let row = rows.first, let id = row["id"].string else { return nil }
            try database.query(
                "UPDATE runs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?",
                [.text(owner), Self.millis(expiry), .text(id)]
            )
            return try Self.summary(row)
        }
    }

    // MARK: Helpers

    private func fetchSummary(_ run: RunID, in database: SQLiteDatabase) throws -> RunSummary? {
        try database.query("SELECT \(Self.summaryColumns) FROM runs WHERE id = ?", [.text(run.rawValue)]).first.map(Self.summary)
    }

    private func loadSummary(_ run: RunID, in database: SQLiteDatabase) throws -> RunSummary {
        guard let summary = try fetchSummary(run, in: database) else { throw TroupeError(.notFound, "No run '\(run)' in this store.") }
        return summary
    }

    static let summaryColumns = """
        id, goal, status, created_at, updated_at, last_sequence, configuration, input_tokens, output_tokens,
        cached_tokens, model_calls, tool_calls, answer, error
        """

    private static func summary(_ row: SQLiteRow) throws -> RunSummary {
        func decode<T: Decodable>(_ type: T.Type, _ column: String) throws -> T? {
            guard let text = row[column].string else { return nil }
            do {
                return try JSONCoding.decode(type, from: Data(text.utf8))
            } catch {
                throw TroupeError(.storage, "A run record cannot be read (\(column)): \(JSONCoding.describe(error)).", underlying: error)
            }
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
        summary.answer = row["answer"].string
        summary.error = try decode(TroupeError.self, "error")
        return summary
    }

    private static func encode<T: Encodable>(_ value: T) throws -> String {
        do {
            return try JSONCoding.encodeString(value)
        } catch {
            throw TroupeError(.internal, "Cannot encode \(T.self): \(error)", underlying: error)
        }
    }

    static func millis(_ date: Date) -> SQLiteValue {
        .integer(Int((date.timeIntervalSince1970 * 1000).rounded()))
    }

    static func date(_ value: SQLiteValue) -> Date {
        Date(timeIntervalSince1970: Double(value.integer ?? 0) / 1000)
    }
}
