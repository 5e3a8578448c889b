import Logging
import PostgresNIO
import TroupeCore

/// The PostgreSQL schema, as numbered migrations. A migration is never edited once released: add
/// a new one.
///
/// Journal payloads are `text`, not `jsonb`: the journal is written once and read back whole and
/// in order, never queried inside; `jsonb` would parse every event on the way in and give back
/// other bytes (keys reordered, numbers normalised) than the ones written. Times are milliseconds
/// since 1970 in `bigint`, as in the SQLite store.
enum PostgresMigrations {
    static let all: [(version: Int, statements: [String])] = [
        (
            1,
            [
                """
                CREATE TABLE troupe_runs (
                    id text PRIMARY KEY,
                    tenant text NOT NULL DEFAULT 'default',
                    goal text NOT NULL,
                    status text NOT NULL,
                    created_at bigint NOT NULL,
                    updated_at bigint NOT NULL,
                    last_sequence bigint NOT NULL,
                    configuration text NOT NULL,
                    input_tokens bigint NOT NULL DEFAULT 0,
                    output_tokens bigint NOT NULL DEFAULT 0,
                    cached_tokens bigint NOT NULL DEFAULT 0,
                    model_calls bigint NOT NULL DEFAULT 0,
                    tool_calls bigint NOT NULL DEFAULT 0,
                    answer text,
                    error text,
                    lease_owner text,
                    lease_expires_at bigint,
                    lease_token bigint NOT NULL DEFAULT 0,
                    claim_attempts integer NOT NULL DEFAULT 0,
                    claimable_at bigint
                )
                """,
                "CREATE INDEX troupe_runs_by_created ON troupe_runs (created_at DESC, id DESC)",
                "CREATE INDEX troupe_runs_by_status ON troupe_runs (status, created_at)",
                // What workers look through: only runs that may still need driving.
                "CREATE INDEX troupe_runs_claimable ON troupe_runs (created_at, id) WHERE status IN ('pending', 'running')",
                """
                CREATE TABLE troupe_events (
                    run_id text NOT NULL REFERENCES troupe_runs (id),
                    sequence bigint NOT NULL,
                    type text NOT NULL,
                    schema_version integer NOT NULL,
                    recorded_at bigint NOT NULL,
                    payload text NOT NULL,
                    PRIMARY KEY (run_id, sequence)
                )
                """,
            ]
        ),
        (
            2,
            [
                // Events are inserted only by the statement that moves their run's row on (or
                // creates it), so the foreign key only cost a trigger per event.
                "ALTER TABLE troupe_events DROP CONSTRAINT IF EXISTS troupe_events_run_id_fkey",
                // Room on each page for a run row's next versions: its ~20 updates per run stay
                // heap-only (no index entry each) when they leave the indexed columns alone.
                "ALTER TABLE troupe_runs SET (fillfactor = 70)",
            ]
        ),
        (
            3,
            [
                // Tenants, and their turn in the claims' round-robin (the turn of their last claim).
                "CREATE TABLE troupe_tenants (id text PRIMARY KEY, created_at bigint NOT NULL, claim_turn bigint NOT NULL DEFAULT 0)",
                "CREATE SEQUENCE troupe_claim_turns",
                "CREATE INDEX troupe_tenants_by_turn ON troupe_tenants (claim_turn, id)",
                """
                INSERT INTO troupe_tenants (id, created_at) SELECT tenant, MIN(created_at) FROM troupe_runs GROUP BY tenant
                ON CONFLICT DO NOTHING
                """,
                // A tenant's oldest claimable run, and its runs driven now (lease renewals, which
                // change lease_expires_at only, stay heap-only updates).
                "CREATE INDEX troupe_runs_claimable_by_tenant ON troupe_runs (tenant, created_at, id) WHERE status IN ('pending', 'running')",
                "CREATE INDEX troupe_runs_leased_by_tenant ON troupe_runs (tenant) WHERE lease_owner IS NOT NULL",
                "CREATE INDEX troupe_runs_by_tenant ON troupe_runs (tenant, created_at DESC, id DESC)",
                // API keys: never the key, only its SHA-256 (hex).
                """
                CREATE TABLE troupe_api_keys (
                    id text PRIMARY KEY,
                    prefix text NOT NULL,
                    name text,
                    tenant text NOT NULL,
                    role text NOT NULL,
                    digest text NOT NULL,
                    created_at bigint NOT NULL,
                    expires_at bigint,
                    last_used_at bigint,
                    revoked_at bigint
                )
                """,
                "CREATE INDEX troupe_api_keys_by_tenant ON troupe_api_keys (tenant, created_at)",
            ]
        ),
        (
            4,
            [
                // Tool calls waiting for a person's decision: while any wait, the run waits (not claimable).
                "ALTER TABLE troupe_runs ADD COLUMN pending_approvals bigint NOT NULL DEFAULT 0"
            ]
        ),
    ]

    /// The newest schema version this build knows.
    static var latest: Int { all.map(\.version).max() ?? 0 }

    /// A key for `pg_advisory_xact_lock`: two processes starting at once migrate one after the other.
    static let lockKey: Int64 = 0x7472_6f75_7065  // "troupe"

    /// The migrations newer than the database's version (all of them for an empty database).
    static func pending(on client: PostgresClient, logger: Logger) async throws -> [(version: Int, statements: [String])] {
        let current = try await version(on: client, logger: logger)
        try check(current)
        return all.filter { $0.version > current }
    }

    /// Applies every migration newer than the database's version, in one transaction under an
    /// advisory lock.
    static func migrate(_ client: PostgresClient, logger: Logger) async throws {
        // A schema already current needs no lock and no DDL: a role with data rights only (no
        // CREATE on the schema) can open a store an administrator migrated.
        let found = try await version(on: client, logger: logger)
        try check(found)
        guard found < latest else { return }
        try await client.withTransaction(logger: logger) { connection in
            // Another process's migration is waited for however long it takes (not the store's 5 s lock timeout).
            try await connection.query(
                "SELECT set_config('lock_timeout', '0', true), set_config('statement_timeout', '0', true)", logger: logger)
            try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS troupe_schema_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)",
                logger: logger)
            // Read under the lock: another process may have migrated meanwhile.
            let rows = try await connection.query("SELECT COALESCE(MAX(version), 0) FROM troupe_schema_migrations", logger: logger)
            var current = 0
            for try await (version) in rows.decode(Int.self) { current = version }
            try check(current)
            for migration in all where migration.version > current {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                let now = PostgresRunStore.millis(.now)
                try await connection.query(
                    "INSERT INTO troupe_schema_migrations (version, applied_at) VALUES (\(migration.version), \(now))", logger: logger)
            }
        }
    }

    /// The database's schema version (0 when it has none).
    static func version(on client: PostgresClient, logger: Logger) async throws -> Int {
        let exists = try await client.query("SELECT to_regclass('troupe_schema_migrations') IS NOT NULL", logger: logger)
        var hasTable = false
        for try await (flag) in exists.decode(Bool.self) { hasTable = flag }
        guard hasTable else { return 0 }
        let rows = try await client.query("SELECT COALESCE(MAX(version), 0) FROM troupe_schema_migrations", logger: logger)
        var current = 0
        for try await (version) in rows.decode(Int.self) { current = version }
        return current
    }

    private static func check(_ current: Int) throws {
        guard current <= latest else {
            throw TroupeError(
                .storage,
                "The store's schema is version \(current), newer than this troupe understands (\(latest)). Upgrade troupe.")
        }
    }
}
