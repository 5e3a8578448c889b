import Foundation
import Testing
import Troupe
import TroupeServer
import TroupeTesting

/// A property-based run of schemathesis (PyPI, a test fixture in `.build/schemathesis-venv`) against
/// the served OpenAPI document with an admin key: every operation, generated valid and invalid
/// requests, and stateful sequences (create, then read, cancel, resume, decide) — no 5xx and no
/// answer that contradicts the document.
@Suite(.enabled(if: Schemathesis.executable != nil, "needs schemathesis: ./scripts/test installs it (TROUPE_SCHEMATHESIS)"))
struct SchemathesisTests {
    @Test func theServedDocumentHoldsForGeneratedRequests() async throws {
        let store = InMemoryRunStore()
        let admin = try APIKeys.make(tenant: "acme", role: .admin, name: "schemathesis", expiresAt: nil, at: Date())
        try await store.createKey(admin.record)
        try await APITestServer.with(store: store, access: .keys(store), model: PlayingModel(steps: 1)) { api in
            try await withTemporaryDirectory { directory in
                let process = Process()
                process.executableURL = URL(fileURLWithPath: try #require(Schemathesis.executable))
                process.currentDirectoryURL = URL(fileURLWithPath: directory)
                process.arguments = [
                    "run", "\(api.baseURL)/openapi.json", "--header", "Authorization: Bearer \(admin.key)",
                    // Every check but one: a schema-valid request may still be refused for what a
                    // schema cannot say (a model this server does not offer, a run that does not
                    // exist), and the document names those refusals.
                    "--checks", "all", "--exclude-checks", "positive_data_acceptance",
                    "--max-examples", "30", "--seed", "20261207", "--no-color",
                ]
                var environment = ProcessInfo.processInfo.environment
                environment["SCHEMATHESIS_HOOKS"] = nil
                environment["HOME"] = directory
                process.environment = environment
                let log = directory + "/schemathesis.log"
                FileManager.default.createFile(atPath: log, contents: nil)
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
                process.standardOutput = handle
                process.standardError = handle
                try process.run()
                let status = await withCheckedContinuation { continuation in
                    DispatchQueue.global().async {
                        process.waitUntilExit()
                        continuation.resume(returning: process.terminationStatus)
                    }
                }
                try handle.close()
                let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                #expect(status == 0, "schemathesis found problems:\n\(output.suffix(20_000))")
                #expect(output.contains("passed"), "\(output.suffix(2_000))")
            }
        }
    }
}

/// The schemathesis program of `.build/schemathesis-venv` (or `$TROUPE_SCHEMATHESIS`), if there is one.
enum Schemathesis {
    static let executable: String? = {
        let configured = ProcessInfo.processInfo.environment["TROUPE_SCHEMATHESIS"].flatMap { $0.isEmpty ? nil : $0 }
        let path = configured ?? MCPFixtures.root + "/.build/schemathesis-venv/bin/schemathesis"
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }()
}
