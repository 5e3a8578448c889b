public import Foundation
import Logging
import SQLiteNIO
public import TroupeCore

/// The embedded, durable ``RunStore``: one SQLite file in WAL mode.
///
/// Several processes may open the same file (a CLI `run` and a `cancel`, say): SQLite's write lock
/// serializes them and the journal's expected sequence numbers keep them from forking a run.
/// Within a process, one connection serves every run, and each append is one transaction.
public actor SQLiteRunStore: RunStore {
    /// Where the database lives.
    public nonisolated let path: String
    private let connection: SQLiteConnection
    private let lock = AsyncLock()
    /// Summaries of runs this process wrote, to avoid re-reading them on every append.
    private var cache: [RunID: RunSummary] = [:]

    private init(path: String, connection: SQLiteConnection) {
        self.path = path
        self.connection = connection
    }

    /// Opens (creating if needed) the database at `path` and migrates it to the current schema.
    public static func open(path: String, logger: Logger = Logger(label: "troupe.store")) async throws -> SQLiteRunStore {
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw TroupeError(.storage, "Cannot create the directory for the store at \(path): \(error.localizedDescription)")
        }
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(storage: .file(path: url.path), logger: logger)
        } catch {
            throw TroupeError(.storage, "Cannot open the SQLite store at \(path): \(error)", underlying: error)
        }
        let store = SQLiteRunStore(path: url.path, connection: connection)
        do {
            try await store.configure()
        } catch {
            try? await connection.close()
            throw TroupeError.wrap(error, as: .storage, "Cannot prepare the SQLite store at \(path): \(error)")
        }
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
            try await store.close()
            return result
        } catch {
            try? await store.close()
            throw error
        }
    }

    private func configure() async throws {
        _ = try await connection.query("PRAGMA busy_timeout = 10000")
        _ = try await connection.query("PRAGMA journal_mode = WAL")
        _ = try await connection.query("PRAGMA synchronous = NORMAL")
        try await lock.withLock { try await SQLiteMigrations.migrate(connection) }
    }

    public func close() async throws {
        try await connection.close()
    }

    // MARK: Runs

    public func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) async throws -> RunSummary {
        let event = RunEvent.runCreated(goal: goal, configuration: configuration)
        let summary = RunSummary(id: id, goal: goal, configuration: configuration, createdAt: time).applying([event], at: time)
        let payload = try Self.encode(event)
        let configurationJSON = try Self.encode(configuration)
        try await transaction {
            let existing = try await connection.query("SELECT 1 FROM runs WHERE id = ?", [.text(id.rawValue)])
            guard existing.isEmpty else { throw TroupeError(.invalidInput, "Run \(id) already exists.") }
            _ = try await connection.query(
                """
                INSERT INTO runs (id, goal, status, created_at, updated_at, last_sequence, configuration)
                VALUES (?, ?, ?, ?, ?, 1, ?)
                """,
                [
                    .text(id.rawValue), .text(goal), .text(summary.status.rawValue), Self.millis(time), Self.millis(time),
                    .text(configurationJSON),
                ]
            )
            _ = try await connection.query(
                "INSERT INTO events (run_id, sequence, type, schema_version, recorded_at, payload) VALUES (?, 1, ?, ?, ?, ?)",
                [.text(id.rawValue), .text(event.type), .integer(RunEventRecord.currentSchemaVersion), Self.millis(time), .text(payload)]
            )
        }
        cache[id] = summary
        return summary
    }

    /// An append waiting for the next group commit.
    private struct AppendRequest: Sendable {
        var id: Int
        var run: RunID
        var events: [RunEvent]
        var payloads: [String]
        var expectedSequence: Int
        var time: Date
    }

    /// Appends wait here for the next group commit: whoever gets the store's lock next writes
    /// everything waiting in one transaction, so concurrent runs share commits (and their thread
    /// hops and WAL writes) instead of each paying for its own. Outcomes wait here for their callers.
    private var queue: [AppendRequest] = []
    private var nextRequestID = 0
    private var outcomes: [Int: Result<Int, any Error>] = [:]

    public func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, at time: Date) async throws -> Int {
        guard !events.isEmpty else { return expectedSequence }
        nextRequestID += 1
        let id = nextRequestID
        queue.append(
            AppendRequest(
                id: id, run: run, events: events, payloads: try events.map(Self.encode), expectedSequence: expectedSequence, time: time)
        )
        try await lock.withLock {
            // An earlier holder of the lock may have committed this append with its batch.
            guard outcomes[id] == nil else { return }
            let batch = queue
            queue = []
            await commit(batch)
        }
        guard let outcome = outcomes.removeValue(forKey: id) else {
            throw TroupeError(.internal, "An append to run \(run) was lost by the store.")
        }
        return try outcome.get()
    }

    /// Writes a batch of appends in one transaction (the caller holds the lock). A conflicting
    /// append fails alone; any other failure rolls the whole batch back and fails every append in
    /// it, so nothing is half-written.
    private func commit(_ batch: [AppendRequest]) async {
        var results: [Int: Result<Int, any Error>] = [:]
        do {
            _ = try await connection.query("BEGIN IMMEDIATE")
            do {
                for request in batch {
                    do {
                        results[request.id] = .success(try await write(request))
                    } catch let error as TroupeError where error.code == .journalConflict || error.code == .notFound {
                        results[request.id] = .failure(error)
                    }
                }
                _ = try await connection.query("COMMIT")
            } catch {
                _ = try? await connection.query("ROLLBACK")
                throw error
            }
        } catch {
            for request in batch {
                cache[request.run] = nil
                results[request.id] = .failure(Self.storageError(error))
            }
        }
        for (id, result) in results { outcomes[id] = result }
    }

    /// One append inside an open transaction: the optimistic check, the summary, the events.
    private func write(_ request: AppendRequest) async throws -> Int {
        let run = request.run
        let current: RunSummary
        if let cached = cache[run], cached.lastSequence == request.expectedSequence {
            current = cached
        } else {
            current = try await loadSummary(run)
        }
        let next = current.applying(request.events, at: request.time)
        // Only what changed is encoded: an append costs no JSON beyond its events.
        let configuration: SQLiteData =
            next.configuration == current.configuration ? .null : .text(try Self.encode(next.configuration))
        let error: SQLiteData = try next.error.map { .text(try Self.encode($0)) } ?? .null
        let updated = try await connection.query(
            """
            UPDATE runs SET status = ?, updated_at = ?, last_sequence = ?, input_tokens = ?, output_tokens = ?,
                cached_tokens = ?, model_calls = ?, tool_calls = ?, answer = ?, error = ?,
                configuration = COALESCE(?, configuration)
            WHERE id = ? AND last_sequence = ? RETURNING id
            """,
            [
                .text(next.status.rawValue), Self.millis(request.time), .integer(next.lastSequence), .integer(next.usage.inputTokens),
                .integer(next.usage.outputTokens), .integer(next.usage.cachedTokens), .integer(next.modelCalls),
                .integer(next.toolCalls), next.answer.map(SQLiteData.text) ?? .null, error, configuration,
                .text(run.rawValue), .integer(request.expectedSequence),
            ]
        )
        guard !updated.isEmpty else {
            cache[run] = nil
            throw TroupeError.conflict(run, expected: request.expectedSequence, actual: try await loadSummary(run).lastSequence)
        }
        var sql = "INSERT INTO events (run_id, sequence, type, schema_version, recorded_at, payload) VALUES "
        var binds: [SQLiteData] = []
        binds.reserveCapacity(request.events.count * 6)
        for (offset, event) in request.events.enumerated() {
            sql += offset == 0 ? "(?, ?, ?, ?, ?, ?)" : ", (?, ?, ?, ?, ?, ?)"
            binds += [
                .text(run.rawValue), .integer(request.expectedSequence + offset + 1), .text(event.type),
                .integer(RunEventRecord.currentSchemaVersion), Self.millis(request.time), .text(request.payloads[offset]),
            ]
        }
        _ = try await connection.query(sql, binds)
        cache[run] = next
        return next.lastSequence
    }

    public func events(of run: RunID, after sequence: Int) async throws -> [RunEventRecord] {
        let rows = try await locked {
            try await connection.query(
                "SELECT sequence, recorded_at, schema_version, payload FROM events WHERE run_id = ? AND sequence > ? ORDER BY sequence",
                [.text(run.rawValue), .integer(sequence)]
            )
        }
        return try rows.map { row in
            let sequence = row.column("sequence")?.integer ?? 0
            let payload = row.column("payload")?.string ?? ""
            do {
                return RunEventRecord(
                    sequence: sequence,
                    recordedAt: Self.date(row.column("recorded_at")),
                    event: try JSONCoding.decode(RunEvent.self, from: Data(payload.utf8)),
                    schemaVersion: row.column("schema_version")?.integer ?? 1
                )
            } catch {
                throw TroupeError(
                    .storage,
                    "Event \(sequence) of run \(run) cannot be read: \(JSONCoding.describe(error)).",
                    underlying: error
                )
            }
        }
    }

    public func run(_ id: RunID) async throws -> RunSummary? {
        try await locked {
            try await fetchSummary(id)
        }
    }

    public func runs(_ query: RunQuery) async throws -> [RunSummary] {
        var sql = "SELECT \(Self.summaryColumns) FROM runs WHERE 1 = 1"
        var binds: [SQLiteData] = []
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
        let rows = try await locked { try await connection.query(sql, binds) }
        return try rows.map(Self.summary)
    }

    // MARK: Leases

    public func acquireLease(on run: RunID, owner: String, until expiry: Date, force: Bool, at time: Date) async throws -> Lease {
        try await transaction {
            let rows = try await connection.query("SELECT lease_owner, lease_expires_at FROM runs WHERE id = ?", [.text(run.rawValue)])
            guard let row = rows.first else { throw TroupeError(.notFound, "No run '\(run)' in this store.") }
            if let holder = row.column("lease_owner")?.string, holder != owner, !force {
                let expires = Self.date(row.column("lease_expires_at"))
                if expires > time { throw TroupeError.leaseHeld(Lease(runID: run, owner: holder, expiresAt: expires)) }
            }
            _ = try await connection.query(
                "UPDATE runs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?",
                [.text(owner), Self.millis(expiry), .text(run.rawValue)]
            )
            return Lease(runID: run, owner: owner, expiresAt: expiry)
        }
    }

    public func renewLease(on run: RunID, owner: String, until expiry: Date) async throws {
        let updated = try await locked {
            try await connection.query(
                "UPDATE runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? RETURNING id",
                [Self.millis(expiry), .text(run.rawValue), .text(owner)]
            )
        }
        if updated.isEmpty {
            throw TroupeError(.leaseHeld, "The lease on run \(run) was taken over by another driver; this one stops.")
        }
    }

    public func releaseLease(on run: RunID, owner: String) async throws {
        _ = try await locked {
            try await connection.query(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
                [.text(run.rawValue), .text(owner)]
            )
        }
    }

    public func lease(of run: RunID) async throws -> Lease? {
        let rows = try await locked {
            try await connection.query("SELECT lease_owner, lease_expires_at FROM runs WHERE id = ?", [.text(run.rawValue)])
        }
        guard let row = rows.first, let owner = row.column("lease_owner")?.string else { return nil }
        return Lease(runID: run, owner: owner, expiresAt: Self.date(row.column("lease_expires_at")))
    }

    public func claimNextRun(owner: String, until expiry: Date, at time: Date) async throws -> RunSummary? {
        try await transaction {
            let rows = try await connection.query(
                """
                SELECT \(Self.summaryColumns) FROM runs
                WHERE status IN ('pending', 'running') AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
                ORDER BY created_at, id LIMIT 1
                """,
                [Self.millis(time)]
            )
            guard let row = rows.first, let id = row.column("id")?.string else { return nil }
            _ = try await connection.query(
                "UPDATE runs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?",
                [.text(owner), Self.millis(expiry), .text(id)]
            )
            return try Self.summary(row)
        }
    }

    // MARK: Helpers

    /// The run's summary, read without taking the lock (callers hold it or need not).
    private func fetchSummary(_ run: RunID) async throws -> RunSummary? {
        let rows = try await connection.query("SELECT \(Self.summaryColumns) FROM runs WHERE id = ?", [.text(run.rawValue)])
        return try rows.first.map(Self.summary)
    }

    private func loadSummary(_ run: RunID) async throws -> RunSummary {
        guard let summary = try await fetchSummary(run) else { throw TroupeError(.notFound, "No run '\(run)' in this store.") }
        return summary
    }

    private func locked<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await lock.withLock(body)
        } catch {
            throw Self.storageError(error)
        }
    }

    /// Runs `body` inside `BEGIN IMMEDIATE … COMMIT`, rolling back on any error.
    private func transaction<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await locked {
            _ = try await connection.query("BEGIN IMMEDIATE")
            do {
                let result = try await body()
                _ = try await connection.query("COMMIT")
                return result
            } catch {
                _ = try? await connection.query("ROLLBACK")
                throw error
            }
        }
    }

    private static func storageError(_ error: any Error) -> any Error {
        if error is TroupeError { return error }
        return TroupeError(.storage, "The SQLite store failed: \(error)", underlying: error)
    }

    static let summaryColumns = """
        id, goal, status, created_at, updated_at, last_sequence, configuration, input_tokens, output_tokens,
        cached_tokens, model_calls, tool_calls, answer, error
        """

    private static func summary(_ row: SQLiteRow) throws -> RunSummary {
        func decode<T: Decodable>(_ type: T.Type, _ column: String) throws -> T? {
            guard let text = row.column(column)?.string else { return nil }
            do {
                return try JSONCoding.decode(type, from: Data(text.utf8))
            } catch {
                throw TroupeError(.storage, "A run record cannot be read (\(column)): \(JSONCoding.describe(error)).", underlying: error)
            }
        }
        var summary = RunSummary(
            id: RunID(row.column("id")?.string ?? ""),
            goal: row.column("goal")?.string ?? "",
            configuration: try decode(RunConfiguration.self, "configuration") ?? RunConfiguration(),
            createdAt: date(row.column("created_at"))
        )
        summary.status = RunStatus(rawValue: row.column("status")?.string ?? "") ?? .pending
        summary.updatedAt = date(row.column("updated_at"))
        summary.lastSequence = row.column("last_sequence")?.integer ?? 0
        summary.usage = Usage(
            inputTokens: row.column("input_tokens")?.integer ?? 0,
            outputTokens: row.column("output_tokens")?.integer ?? 0,
            cachedTokens: row.column("cached_tokens")?.integer ?? 0
        )
        summary.modelCalls = row.column("model_calls")?.integer ?? 0
        summary.toolCalls = row.column("tool_calls")?.integer ?? 0
        summary.answer = row.column("answer")?.string
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

    static func millis(_ date: Date) -> SQLiteData {
        .integer(Int((date.timeIntervalSince1970 * 1000).rounded()))
    }

    static func date(_ data: SQLiteData?) -> Date {
        Date(timeIntervalSince1970: Double(data?.integer ?? 0) / 1000)
    }
}
