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
    /// `disable`, `prefer` (the default: TLS when the server offers it) or `require`.
    public var sslMode: String

    /// Parses `url`; `environment` gives `PGPASSWORD` when the URL has no password.
    public init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(TroupeError) {
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
        guard ["disable", "prefer", "require"].contains(mode) else {
            throw TroupeError(.configuration, "sslmode '\(mode)' is not supported: use disable, prefer or require.")
        }
        self.host = host
        self.port = port
        self.username = components.user.flatMap { $0.removingPercentEncoding } ?? environment["PGUSER"] ?? "postgres"
        self.password =
            components.password.flatMap { $0.removingPercentEncoding } ?? environment["PGPASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
        self.database = database
        self.sslMode = mode
    }

    /// The URL without its password.
    public var description: String {
        "postgres://\(username)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
    }

    /// `url` with any password replaced by `***`, for messages.
    public static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? "postgres://***"
    }

    /// Connects once and disconnects: a database that cannot be reached (or refuses the login)
    /// fails at once with its reason, where a pool would keep trying for a minute.
    package func probe(logger: Logger) async throws {
        let tls: PostgresConnection.Configuration.TLS =
            switch sslMode {
            case "disable": .disable
            case "require": .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            default: .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
        let configuration = PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tls)
        let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
        try? await connection.close()
    }

    /// The client configuration for this location.
    func clientConfiguration() -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS =
            switch sslMode {
            case "disable": .disable
            case "require": .require(.makeClientConfiguration())
            default: .prefer(.makeClientConfiguration())
            }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: tls)
        configuration.options.maximumConnections = 16
        configuration.options.connectTimeout = .seconds(10)
        return configuration
    }
}
