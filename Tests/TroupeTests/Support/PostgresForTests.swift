import Foundation
import Logging
import PostgresNIO
import Troupe

@testable import TroupePostgres

/// The throwaway PostgreSQL cluster `./scripts/test` starts (`$TROUPE_TEST_POSTGRES_URL`), and
/// a fresh database in it per store, so that tests never see each other's runs.
enum PostgresForTests {
    static let url: String? = ProcessInfo.processInfo.environment["TROUPE_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }

    static var available: Bool { url != nil }

    static let logger = Logger(label: "test.postgres", factory: { _ in SwiftLogNoOpLogHandler() })

    /// The URL of a new, empty database.
    static func freshDatabase() async throws -> String {
        guard let url else { throw CLIError(message: "TROUPE_TEST_POSTGRES_URL is not set; run ./scripts/test") }
        let name = "troupe_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let client = PostgresClient(configuration: try PostgresLocation(url: url).clientConfiguration(), backgroundLogger: logger)
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
        var components = URLComponents(string: url)!
        components.path = "/" + name
        return components.string!
    }
}
