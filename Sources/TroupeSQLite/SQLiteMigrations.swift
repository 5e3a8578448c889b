import Foundation
import TroupeCore
import TroupeStore

/// The SQLite schema, as numbered migrations. A migration is never edited once released: add a new one.
enum SQLiteMigrations {
    static let all: [(version: Int, statements: [String])] = [
        (
            1,
            [
                """
                CREATE TABLE runs (
                    id TEXT PRIMARY KEY,
                    tenant TEXT NOT NULL DEFAULT 'default',
                    goal TEXT NOT NULL,
                    status TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    last_sequence INTEGER NOT NULL,
                    configuration TEXT NOT NULL,
                    input_tokens INTEGER NOT NULL DEFAULT 0,
                    output_tokens INTEGER NOT NULL DEFAULT 0,
                    cached_tokens INTEGER NOT NULL DEFAULT 0,
                    model_calls INTEGER NOT NULL DEFAULT 0,
                    tool_calls INTEGER NOT NULL DEFAULT 0,
                    answer TEXT,
                    error TEXT,
                    lease_owner TEXT,
                    lease_expires_at INTEGER
                )
                """,
                "CREATE INDEX runs_by_status ON runs (status, created_at)",
                "CREATE INDEX runs_by_created ON runs (created_at)",
                """
                CREATE TABLE events (
                    run_id TEXT NOT NULL REFERENCES runs (id),
                    sequence INTEGER NOT NULL,
                    type TEXT NOT NULL,
                    schema_version INTEGER NOT NULL,
                    recorded_at INTEGER NOT NULL,
                    payload TEXT NOT NULL,
                    PRIMARY KEY (run_id, sequence)
                ) WITHOUT ROWID
                """,
            ]
        ),
        (
            2,
            [
                // The fencing token of the run's lease: greater for every acquisition.
                "ALTER TABLE runs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0",
                // Claims in a row without a clean end of the drive, and when the run may be claimed again.
                "ALTER TABLE runs ADD COLUMN claim_attempts INTEGER NOT NULL DEFAULT 0",
                "ALTER TABLE runs ADD COLUMN claimable_at INTEGER",
            ]
        ),
        (
            3,
            [
                // Tenants, and their turn in the claims' round-robin (the turn of their last claim).
                "CREATE TABLE tenants (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, claim_turn INTEGER NOT NULL DEFAULT 0)",
                "INSERT OR IGNORE INTO tenants (id, created_at) SELECT tenant, MIN(created_at) FROM runs GROUP BY tenant",
                // A tenant's oldest claimable run, and its runs driven now.
                "CREATE INDEX runs_claimable_by_tenant ON runs (tenant, created_at, id) WHERE status IN ('pending', 'running')",
                "CREATE INDEX runs_leased_by_tenant ON runs (tenant) WHERE lease_owner IS NOT NULL",
                "CREATE INDEX runs_by_tenant ON runs (tenant, created_at)",
                // API keys: never the key, only its SHA-256 (hex).
                """
                CREATE TABLE api_keys (
                    id TEXT PRIMARY KEY,
                    prefix TEXT NOT NULL,
                    name TEXT,
                    tenant TEXT NOT NULL,
                    role TEXT NOT NULL,
                    digest TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    last_used_at INTEGER,
                    revoked_at INTEGER
                )
                """,
                "CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at)",
            ]
        ),
        (
            4,
            [
                // Tool calls waiting for a person's decision: while any wait, the run waits (not claimable).
                "ALTER TABLE runs ADD COLUMN pending_approvals INTEGER NOT NULL DEFAULT 0"
            ]
        ),
    ]

    /// The newest schema version this build knows.
    static var latest: Int { all.map(\.version).max() ?? 0 }

    /// Applies every migration newer than the database's version, each in its own transaction.
    static func migrate(_ database: SQLiteDatabase) throws {
        try database.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        while true {
            let done = try database.transaction {
                // Read the version inside the transaction: another process may have migrated meanwhile.
                let current = try database.query("SELECT MAX(version) AS version FROM schema_migrations").first?["version"].integer ?? 0
                guard current <= latest else {
                    throw TroupeError(
                        .storage,
                        "The store's schema is version \(current), newer than this troupe understands (\(latest)). Upgrade troupe."
                    )
                }
                guard let migration = all.first(where: { $0.version > current }) else { return true }
                for statement in migration.statements {
                    try database.execute(statement)
                }
                try database.query(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    [.integer(migration.version), SQLiteRunStore.millis(Date())]
                )
                return false
            }
            if done { return }
        }
    }
}
