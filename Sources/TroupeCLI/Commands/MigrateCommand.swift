import ArgumentParser
import Foundation
import Troupe

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Bring the store's schema up to this troupe's version (every command also does it on first use).",
        discussion: """
            Applies the numbered migrations the store lacks, in order; on PostgreSQL under an advisory lock, so that \
            processes starting at once do not race. A store whose schema is newer than this troupe is refused, naming \
            both versions. --dry-run prints the migrations that would run, and changes nothing.

            Example: troupe migrate --store postgres://troupe@db.internal/troupe --dry-run
            """
    )

    @Flag(name: .long, help: "Print the migrations that would run; change nothing.")
    var dryRun = false

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            let url = global.storeURL(try await global.settings())
            let pending: [(version: Int, statements: [String])]
            let latest: Int
            if StoreLocation.isPostgres(url) {
                pending = try await PostgresRunStore.pendingMigrations(url: url, logger: global.logger(label: "troupe.store"))
                latest = PostgresRunStore.latestSchemaVersion
            } else {
                pending = try SQLiteRunStore.pendingMigrations(path: try StoreLocation.sqlitePath(url))
                latest = SQLiteRunStore.schemaVersion
            }
            let store = StoreLocation.isPostgres(url) ? PostgresLocation.redacted(url) : try StoreLocation.sqlitePath(url)
            guard !pending.isEmpty else {
                say("\(store): the schema is at version \(latest), this troupe's; nothing to do.")
                return
            }
            if dryRun {
                say("\(store): \(pending.count) migration\(pending.count == 1 ? "" : "s") would run (to version \(latest)):")
                for migration in pending {
                    say("\n-- migration \(migration.version)")
                    for statement in migration.statements { say(statement.trimmingCharacters(in: .whitespacesAndNewlines) + ";") }
                }
                return
            }
            try await global.withStore { _ in }
            say(
                "\(store): applied migration\(pending.count == 1 ? "" : "s") \(pending.map { String($0.version) }.joined(separator: ", ")); "
                    + "the schema is at version \(latest).")
        }
    }
}
