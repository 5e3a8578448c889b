import ArgumentParser
import Foundation
import Troupe

/// `troupe keys`: the API keys of a store, for `troupe serve`. Works on the store directly (also
/// before the first start of a server, which refuses to start without a key).
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Create, list and revoke the API keys that `troupe serve` accepts.",
        discussion: """
            Keys belong to a tenant and have a role: viewer (reads its tenant's runs), operator (also creates, \
            cancels and resumes them) or admin (manages keys, and acts on every tenant's runs). A key is shown once, \
            when it is made; the store keeps only its SHA-256. Clients send it as `Authorization: Bearer trp_…`; \
            the CLI's --server commands read it from $TROUPE_API_KEY.

            Example: troupe keys create --tenant acme --role operator --name ci --expires-in 90d
            """,
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a key; it is printed once, alone on the last line of stdout.")

        @Option(name: .long, help: "The tenant the key belongs to (lowercase letters, digits, '.', '_', '-').")
        var tenant: String

        @Option(name: .long, help: "viewer, operator or admin.")
        var role: String

        @Option(name: .long, help: "A name to recognise the key by (at most 200 characters).")
        var name: String?

        @Option(name: .long, help: ArgumentHelp("How long the key works, e.g. 90d, 12h (default: no expiry).", valueName: "duration"))
        var expiresIn: String?

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await reportingErrors(verbose: global.verbose) {
                guard let role = Role(rawValue: role) else {
                    throw TroupeError(
                        .invalidInput, "Unknown role '\(role)'. Use one of: \(Role.allCases.map(\.rawValue).joined(separator: ", ")).")
                }
                let now = Date()
                let expiresAt = try expiresIn.map { now.addingTimeInterval(try APIKeys.lifetime($0)) }
                let made = try APIKeys.make(tenant: tenant, role: role, name: name, expiresAt: expiresAt, at: now)
                try await global.withStore { opened in try await opened.keys.createKey(made.record) }
                let expiry = made.record.expiresAt.map { "expires \($0.formatted(.iso8601))" } ?? "never expires"
                say("Created \(made.record.id) (\(made.record.role.rawValue) of tenant \(made.record.tenant), \(expiry)).")
                say("The key is shown once; store it now:")
                print(made.key)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys, newest first (never the keys themselves).")

        @Option(name: .long, help: "Only this tenant's keys.")
        var tenant: String?

        @Flag(
            name: .long, help: "Print a JSON array (id, prefix, name, tenant, role, createdAt, expiresAt, lastUsedAt, revokedAt, active).")
        var json = false

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await reportingErrors(verbose: global.verbose) {
                let records = try await global.withStore { opened in try await opened.keys.keys(tenant: tenant) }
                let now = Date()
                if json {
                    print(try KeyListing.json(records, at: now))
                    return
                }
                if records.isEmpty {
                    say("No keys\(tenant.map { " of tenant \($0)" } ?? ""). Make one with `troupe keys create --tenant NAME --role admin`.")
                    return
                }
                for record in records {
                    let state =
                        record.revokedAt != nil ? "revoked" : record.isActive(at: now) ? "active" : "expired"
                    let used = record.lastUsedAt.map { "used \($0.formatted(.iso8601))" } ?? "never used"
                    say(
                        "\(record.id)  \(record.prefix)…  \(record.tenant)  \(record.role.rawValue)  \(state)  "
                            + "created \(record.createdAt.formatted(.iso8601))  \(used)\(record.name.map { "  \($0.clipped(to: 40))" } ?? "")"
                    )
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key: servers refuse it from its next request on.")

        @Argument(help: "The key's ID (key_…), as `troupe keys list` shows it.")
        var keyID: String

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await reportingErrors(verbose: global.verbose) {
                let revoked = try await global.withStore { opened in try await opened.keys.revokeKey(id: keyID, tenant: nil, at: Date()) }
                guard let revoked else {
                    throw TroupeError(.notFound, "No key '\(keyID)' in this store. List keys with `troupe keys list`.")
                }
                say("Revoked \(revoked.id) (\(revoked.role.rawValue) of tenant \(revoked.tenant)).")
            }
        }
    }
}

/// Key records as `troupe keys list --json` prints them: never the digest.
enum KeyListing {
    struct Entry: Encodable {
        var id: String
        var prefix: String
        var name: String?
        var tenant: String
        var role: String
        var createdAt: Date
        var expiresAt: Date?
        var lastUsedAt: Date?
        var revokedAt: Date?
        var active: Bool
    }

    static func json(_ records: [APIKeyRecord], at time: Date) throws -> String {
        let entries = records.map {
            Entry(
                id: $0.id, prefix: $0.prefix, name: $0.name, tenant: $0.tenant, role: $0.role.rawValue, createdAt: $0.createdAt,
                expiresAt: $0.expiresAt, lastUsedAt: $0.lastUsedAt, revokedAt: $0.revokedAt, active: $0.isActive(at: time))
        }
        let encoder = JSONCoding.encoder()
        encoder.outputFormatting.insert(.prettyPrinted)
        return String(decoding: try encoder.encode(entries), as: UTF8.self)
    }
}
