import TroupeCore
// The SQLite library sqlite-nio builds and links (its C module). Calling it directly lets a whole
// transaction run in one go on the store's own thread, with statements prepared once, where
// sqlite-nio's API costs a thread hop and a fresh prepare per statement.
import VaporCSQLite

/// A value bound to or read from SQLite.
enum SQLiteValue: Sendable, Hashable {
    case null
    case integer(Int)
    case real(Double)
    case text(String)

    var integer: Int? {
        if case .integer(let value) = self { return value }
        return nil
    }

    var string: String? {
        if case .text(let value) = self { return value }
        return nil
    }
}

/// One row of a result: values in the order of the statement's columns.
struct SQLiteRow: Sendable {
    /// The statement's column names, shared by all rows of a result.
    let columns: [String]
    let values: [SQLiteValue]

    subscript(_ column: String) -> SQLiteValue {
        guard let index = columns.firstIndex(of: column) else { return .null }
        return values[index]
    }
}

/// One SQLite connection, used from one thread at a time (the store's).
///
/// Statements are prepared once and kept; every call runs synchronously, so a caller that owns a
/// thread (``SQLiteRunStore`` runs on its own event loop) does a whole transaction without a hop.
/// Every failure is a ``TroupeError`` that quotes SQLite's own message: `storageUnavailable` for a
/// lock held by another process beyond the busy timeout, `storage` for the rest.
final class SQLiteDatabase {
    let path: String
    private var handle: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]
    /// Statements beyond this many are finalized after use instead of kept (ad-hoc queries).
    private let maximumCachedStatements = 64

    private static let initialized: Bool = {
        sqlite_nio_sqlite3_initialize() == SQLITE_OK
    }()

    /// Opens (creating if needed) the database file at `path`.
    init(path: String, busyTimeoutMilliseconds: Int32) throws {
        self.path = path
        _ = Self.initialized
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_CREATE | SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let status = sqlite_nio_sqlite3_open_v2(path, &handle, flags, nil)
        guard status == SQLITE_OK, let handle else {
            let message = Self.lastError(of: handle) ?? Self.describe(status)
            sqlite_nio_sqlite3_close(handle)
            throw TroupeError(.storage, "Cannot open the SQLite database at \(path): \(message).")
        }
        self.handle = handle
        sqlite_nio_sqlite3_busy_timeout(handle, busyTimeoutMilliseconds)
    }

    deinit {
        close()
    }

    /// Finalizes every statement and closes the connection; later calls fail with a clear error.
    func close() {
        for statement in statements.values { sqlite_nio_sqlite3_finalize(statement) }
        statements = [:]
        if let handle { sqlite_nio_sqlite3_close_v2(handle) }
        handle = nil
    }

    /// Runs one or more statements without parameters or results (pragmas, DDL, transaction control).
    func execute(_ sql: String) throws {
        let connection = try open()
        var message: UnsafeMutablePointer<CChar>?
        let status = sqlite_nio_sqlite3_exec(connection, sql, nil, nil, &message)
        defer { sqlite_nio_sqlite3_free(message) }
        guard status == SQLITE_OK else {
            throw failure(status, message.map { String(cString: $0) })
        }
    }

    /// Runs one statement with `binds` for its `?` parameters and returns every row it yields.
    @discardableResult
    func query(_ sql: String, _ binds: [SQLiteValue] = []) throws -> [SQLiteRow] {
        let statement = try prepare(sql)
        defer {
            sqlite_nio_sqlite3_reset(statement)
            sqlite_nio_sqlite3_clear_bindings(statement)
            if statements[sql] != statement { sqlite_nio_sqlite3_finalize(statement) }
        }
        for (offset, value) in binds.enumerated() {
            try check(bind(value, at: Int32(offset + 1), in: statement))
        }
        let count = sqlite_nio_sqlite3_column_count(statement)
        var rows: [SQLiteRow] = []
        var columns: [String]?
        while true {
            let status = sqlite_nio_sqlite3_step(statement)
            if status == SQLITE_DONE { return rows }
            guard status == SQLITE_ROW else { throw failure(status) }
            let names =
                columns ?? (0..<count).map { index in sqlite_nio_sqlite3_column_name(statement, index).map { String(cString: $0) } ?? "" }
            columns = names
            rows.append(SQLiteRow(columns: names, values: (0..<count).map { column(at: $0, of: statement) }))
        }
    }

    /// Runs `body` inside `BEGIN IMMEDIATE … COMMIT`, rolling back if it throws.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        // Prepared statements (not `execute`): transaction control is parsed once, not per commit.
        try query("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try query("COMMIT")
            return result
        } catch {
            _ = try? query("ROLLBACK")
            throw error
        }
    }

    // MARK: Statements

    private func open() throws -> OpaquePointer {
        guard let handle else { throw TroupeError(.storage, "The SQLite store at \(path) is closed.") }
        return handle
    }

    private func prepare(_ sql: String) throws -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        let connection = try open()
        let keep = statements.count < maximumCachedStatements
        var statement: OpaquePointer?
        let status = sqlite_nio_sqlite3_prepare_v3(connection, sql, -1, keep ? UInt32(SQLITE_PREPARE_PERSISTENT) : 0, &statement, nil)
        guard status == SQLITE_OK, let statement else { throw failure(status) }
        if keep { statements[sql] = statement }
        return statement
    }

    private func bind(_ value: SQLiteValue, at index: Int32, in statement: OpaquePointer) -> Int32 {
        switch value {
        case .null:
            return sqlite_nio_sqlite3_bind_null(statement, index)
        case .integer(let value):
            return sqlite_nio_sqlite3_bind_int64(statement, index, Int64(value))
        case .real(let value):
            return sqlite_nio_sqlite3_bind_double(statement, index, value)
        case .text(let value):
            // The bridged C string holds every byte (a NUL inside too); the length says where it ends.
            return sqlite_nio_sqlite3_bind_text64(statement, index, value, UInt64(value.utf8.count), Self.transient, UInt8(SQLITE_UTF8))
        }
    }

    private func column(at index: Int32, of statement: OpaquePointer) -> SQLiteValue {
        switch sqlite_nio_sqlite3_column_type(statement, index) {
        case SQLITE_INTEGER:
            return .integer(Int(sqlite_nio_sqlite3_column_int64(statement, index)))
        case SQLITE_FLOAT:
            return .real(sqlite_nio_sqlite3_column_double(statement, index))
        case SQLITE_NULL:
            return .null
        default:
            // Text, and blobs read as text: the schema stores none.
            guard let bytes = sqlite_nio_sqlite3_column_text(statement, index) else { return .text("") }
            let count = Int(sqlite_nio_sqlite3_column_bytes(statement, index))
            return .text(String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self))
        }
    }

    private func check(_ status: Int32) throws {
        guard status == SQLITE_OK else { throw failure(status) }
    }

    private func failure(_ status: Int32, _ detail: String? = nil) -> TroupeError {
        let message = detail ?? Self.lastError(of: handle) ?? Self.describe(status)
        // Another process holding the write lock longer than the busy timeout is worth waiting
        // out; anything else (a full disk, an I/O error, corruption) is not.
        switch status & 0xFF {
        case SQLITE_BUSY, SQLITE_LOCKED, SQLITE_PROTOCOL:
            return TroupeError(
                .storageUnavailable,
                "The SQLite database at \(path) is locked by another process: \(message) (code \(status)). Retrying may succeed.",
                details: ["sqliteCode": "\(status)"]
            )
        default:
            return TroupeError(.storage, "SQLite failed on \(path): \(message) (code \(status)).", details: ["sqliteCode": "\(status)"])
        }
    }

    /// Whether a transaction is open. SQLite rolls a whole transaction back by itself after some
    /// errors (a full disk, an I/O error, a busy lock on commit); then this turns `false`.
    var isInTransaction: Bool {
        guard let handle else { return false }
        return sqlite_nio_sqlite3_get_autocommit(handle) == 0
    }

    private static func lastError(of handle: OpaquePointer?) -> String? {
        guard let handle, let message = sqlite_nio_sqlite3_errmsg(handle) else { return nil }
        return String(cString: message)
    }

    private static func describe(_ status: Int32) -> String {
        sqlite_nio_sqlite3_errstr(status).map { String(cString: $0) } ?? "error \(status)"
    }

    /// SQLITE_TRANSIENT: SQLite copies bound text before the call returns.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
}
