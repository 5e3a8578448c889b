public import Foundation
import Logging
import NIOSSL
import PostgresNIO
public import TroupeCore

/// Where a PostgreSQL store is: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE]`
/// (or `postgresql://`). The password may come from `PGPASSWORD` instead of the URL; it is never
/// part of ``description``, of errors or of logs.
public struct PostgresLocation: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    /// As libpq's: `disable`; `prefer` (the default: TLS when the server offers it) and `require`
    /// (TLS or nothing), neither of which checks the server's certificate; `verify-full` (TLS, the
    /// certificate checked against the system's trust roots and the host name).
    public var sslMode: String

    /// Parses `url`; `environment` gives `PGPASSWORD` when the URL has no password.
    public init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(TroupeError) {
        // Credentials with an unencoded `/`, `#` or `?` would be read as a path, a fragment or a
        // query (and the password as a host or a port): refused, without quoting them.
        if let schemeEnd = url.range(of: "://"), let at = url[schemeEnd.upperBound...].lastIndex(of: "@"),
            url[schemeEnd.upperBound..<at].contains(where: { "/#?".contains($0) })
        {
            throw TroupeError(
                .configuration,
                "The PostgreSQL URL '\(Self.redacted(url))' has '/', '#' or '?' in its user or password: percent-encode them "
                    + "(%2F, %23, %3F), or give the password in PGPASSWORD.")
        }
        guard let scheme = ["postgres://", "postgresql://"].first(where: { url.hasPrefix($0) }),
            let components = URLComponents(string: url)
        else {
            throw TroupeError(.configuration, "'\(Self.redacted(url))' is not a PostgreSQL URL: use postgres://USER@HOST[:PORT]/DATABASE.")
        }
        _ = scheme
        guard let host = components.host, !host.isEmpty else {
            throw TroupeError(.configuration, "The PostgreSQL URL '\(Self.redacted(url))' names no host.")
        }
        let database = String(components.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else {
            throw TroupeError(.configuration, "The PostgreSQL URL '\(Self.redacted(url))' names no database (…/DATABASE).")
        }
        let port = components.port ?? 5432
        guard (1...65_535).contains(port) else {
            throw TroupeError(.configuration, "The PostgreSQL URL '\(Self.redacted(url))' has an invalid port.")
        }
        let mode = components.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
        guard ["disable", "prefer", "require", "verify-full"].contains(mode) else {
            throw TroupeError(.configuration, "sslmode '\(mode)' is not supported: use disable, prefer, require or verify-full.")
        }
        // URLComponents keeps an IPv6 address in its brackets; the user and password it gives are
        // already percent-decoded.
        self.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        self.port = port
        self.username = components.user.flatMap { $0.isEmpty ? nil : $0 } ?? environment["PGUSER"] ?? "postgres"
        self.password =
            components.password.flatMap { $0.isEmpty ? nil : $0 } ?? environment["PGPASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
        self.database = database
        self.sslMode = mode
    }

    /// The URL without its password.
    public var description: String {
        "postgres://\(username)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
    }

    /// `url` with any password replaced by `***`, for messages. It fails closed: whatever lies
    /// between `://` and the last `@` is taken for credentials (a password with an unencoded `/`,
    /// `#` or `?` does not parse as one), and only the user name before its first `:` is kept.
    public static func redacted(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://"), let at = url[schemeEnd.upperBound...].lastIndex(of: "@") else { return url }
        guard let colon = url[schemeEnd.upperBound..<at].firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }

    /// Connects once and disconnects: a database that cannot be reached (or refuses the login)
    /// fails at once with its reason, where a pool would keep trying for a minute.
    package func probe(logger: Logger) async throws {
        let tls: PostgresConnection.Configuration.TLS =
            switch sslMode {
            case "disable": .disable
            case "require", "verify-full": .require(try NIOSSLContext(configuration: tlsConfiguration))
            default: .prefer(try NIOSSLContext(configuration: tlsConfiguration))
            }
        let configuration = PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tls)
        let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
        try? await connection.close()
    }

    /// TLS as `sslMode` asks: the certificate is checked only for `verify-full`.
    private var tlsConfiguration: TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if sslMode != "verify-full" { configuration.certificateVerification = .none }
        return configuration
    }

    /// The client configuration for this location.
    func clientConfiguration() -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS =
            switch sslMode {
            case "disable": .disable
            case "require", "verify-full": .require(tlsConfiguration)
            default: .prefer(tlsConfiguration)
            }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tls)
        configuration.options.maximumConnections = 16
        configuration.options.connectTimeout = .seconds(10)
        // A row locked elsewhere (a process that died mid-transaction, whose connection the
        // server has not dropped yet) must not hold a write for long: past these limits it fails
        // with `storageUnavailable`, which drivers retry while their lease lasts. Set once per
        // connection, not per transaction (a round trip saved on every write).
        configuration.options.additionalStartupParameters = [("lock_timeout", "5s"), ("statement_timeout", "20s")]
        return configuration
    }
}
