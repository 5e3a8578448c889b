import Foundation
import NIOHTTP1
import Testing
import Troupe
import TroupeServer

/// Every route of the served OpenAPI document × every kind of key × a run of the caller's own
/// tenant and of another, each with its exact status. The routes come from the document the
/// server serves, so a route added to it without a line here fails the test.
@Suite struct AuthorizationMatrixTests {
    /// What each operation needs and how to call it: `nil` role for the public ones.
    struct Operation {
        var role: Role?
        /// The status of an allowed call.
        var success: Int
        var body: String?
        /// Whether the path names a run (then another tenant's run is a 404 for all but admins).
        var namesRun: Bool
    }

    static let operations: [String: Operation] = [
        "createRun": Operation(role: .operator, success: 201, body: #"{"goal": "Count"}"#, namesRun: false),
        "listRuns": Operation(role: .viewer, success: 200, body: nil, namesRun: false),
        "getRun": Operation(role: .viewer, success: 200, body: nil, namesRun: true),
        "streamRunEvents": Operation(role: .viewer, success: 200, body: nil, namesRun: true),
        "cancelRun": Operation(role: .operator, success: 200, body: nil, namesRun: true),
        "resumeRun": Operation(role: .operator, success: 200, body: nil, namesRun: true),
        "listApprovals": Operation(role: .viewer, success: 200, body: nil, namesRun: false),
        "getUsage": Operation(role: .viewer, success: 200, body: nil, namesRun: false),
        // The sample runs have ended: a decision reaches the run and is refused as too late.
        "decideApproval": Operation(role: .operator, success: 409, body: #"{"decision": "approve"}"#, namesRun: true),
        "listKeys": Operation(role: .admin, success: 200, body: nil, namesRun: false),
        "createKey": Operation(role: .admin, success: 201, body: #"{"tenant": "acme", "role": "viewer"}"#, namesRun: false),
        "revokeKey": Operation(role: .admin, success: 200, body: nil, namesRun: false),
        "health": Operation(role: nil, success: 200, body: nil, namesRun: false),
        "readiness": Operation(role: nil, success: 200, body: nil, namesRun: false),
    ]

    enum Credential: CaseIterable {
        case none, malformed, unknown, expired, revoked, viewer, `operator`, admin

        var role: Role? {
            switch self {
            case .viewer: .viewer
            case .operator: .operator
            case .admin: .admin
            default: nil
            }
        }
    }

    @Test func everyRouteAnswersEveryKeyAsDocumented() async throws {
        let store = InMemoryRunStore()
        let now = Date()
        var keys: [Credential: String] = [:]
        for credential in [Credential.viewer, .operator, .admin] {
            let made = try APIKeys.make(tenant: "acme", role: credential.role!, name: "\(credential)", expiresAt: nil, at: now)
            try await store.createKey(made.record)
            keys[credential] = made.key
        }
        let expired = try APIKeys.make(tenant: "acme", role: .admin, name: nil, expiresAt: now - 60, at: now - 3600)
        try await store.createKey(expired.record)
        keys[.expired] = expired.key
        let revoked = try APIKeys.make(tenant: "acme", role: .admin, name: nil, expiresAt: nil, at: now)
        try await store.createKey(revoked.record)
        _ = try await store.revokeKey(id: revoked.record.id, tenant: nil, at: now)
        keys[.revoked] = revoked.key
        keys[.unknown] = try APIKeys.make(tenant: "acme", role: .admin, name: nil, expiresAt: nil, at: now).key
        keys[.malformed] = "trp_short"
        let throwaway = try APIKeys.make(tenant: "globex", role: .viewer, name: nil, expiresAt: nil, at: now)
        try await store.createKey(throwaway.record)

        // Ended runs, so that their event streams end too.
        var runs: [String: RunID] = [:]
        for tenant in ["acme", "globex"] {
            var configuration = RunConfiguration(model: "mock")
            configuration.tenant = tenant
            let id = RunID.make()
            _ = try await store.createRun(id: id, goal: "g", configuration: configuration, at: now)
            _ = try await store.cancelRun(id, reason: "ended", at: { now })
            runs[tenant] = id
        }

        try await APITestServer.with(store: store, access: .keys(store), worker: false) { api in
            let document = try JSONValue.parse(try await api.send(.GET, "/openapi.json").body)
            let paths = try #require(document["paths"]?.objectValue)
            var seen: Set<String> = []
            for (template, item) in paths.sorted(by: { $0.key < $1.key }) {
                for (method, operation) in (item.objectValue ?? [:]).sorted(by: { $0.key < $1.key }) {
                    let id = try #require(operation["operationId"]?.stringValue)
                    seen.insert(id)
                    guard let expected = Self.operations[id] else {
                        Issue.record("The route \(method.uppercased()) \(template) (\(id)) has no line in the authorization matrix.")
                        continue
                    }
                    // The document says who may call it: public operations have `security: []`.
                    let isPublic = operation["security"]?.arrayValue?.isEmpty == true
                    #expect(isPublic == (expected.role == nil), "\(id): the document's security and the matrix agree")
                    for tenant in ["acme", "globex"] {
                        let path = template.replacingOccurrences(of: "{id}", with: runs[tenant]!.rawValue)
                            .replacingOccurrences(of: "{keyId}", with: throwaway.record.id)
                            .replacingOccurrences(of: "{callKey}", with: "s1:1:1")
                        #expect(!path.contains("{"), "\(id): a sample value for each path parameter of \(template)")
                        for credential in Credential.allCases {
                            var headers: [(String, String)] = []
                            if let key = keys[credential] { headers.append(("Authorization", "Bearer \(key)")) }
                            let answer = try await api.send(
                                HTTPMethod(rawValue: method.uppercased()), path, body: expected.body, headers: headers)
                            let want = Self.status(expected, credential, ownTenant: tenant == "acme")
                            #expect(
                                answer.status == want,
                                "\(method.uppercased()) \(path) (\(id)) with \(credential) key, \(tenant == "acme" ? "own" : "other") tenant: \(answer.body.prefix(300))"
                            )
                            if answer.status == 401 {
                                let challenge = answer.headers["WWW-Authenticate"].first ?? ""
                                #expect(challenge.hasPrefix(#"Bearer realm="troupe""#), "\(id): a 401 says how to authenticate")
                                #expect(challenge.contains("invalid_token") == (credential != .none), "\(id): \(challenge)")
                            }
                            if answer.status >= 400 {
                                #expect(APITestServer.error(answer.body) != nil, "\(id): refusals are error documents: \(answer.body)")
                            }
                        }
                    }
                }
            }
            #expect(seen == Set(Self.operations.keys), "the matrix names only operations the document has")
        }
    }

    static func status(_ operation: Operation, _ credential: Credential, ownTenant: Bool) -> Int {
        guard let needed = operation.role else { return operation.success }
        guard let role = credential.role else { return 401 }
        guard role.includes(needed) else { return 403 }
        if operation.namesRun, !ownTenant, role != .admin { return 404 }
        return operation.success
    }

    /// A viewer key of `acme` and an admin key of `ops`, stored in `store`.
    static func viewerAndAdmin(in store: InMemoryRunStore, at now: Date) async throws -> (
        viewer: (key: String, record: APIKeyRecord), admin: (key: String, record: APIKeyRecord)
    ) {
        let viewer = try APIKeys.make(tenant: "acme", role: .viewer, name: nil, expiresAt: nil, at: now)
        let admin = try APIKeys.make(tenant: "ops", role: .admin, name: nil, expiresAt: nil, at: now)
        try await store.createKey(viewer.record)
        try await store.createKey(admin.record)
        return (viewer, admin)
    }

    /// `GET /v1/usage` adds up the caller's tenant's model calls only; an admin sees every
    /// tenant's, by tenant; a grouping that does not exist is a 400.
    @Test func usageHoldsTheCallersTenantOnly() async throws {
        let store = InMemoryRunStore()
        let now = Date()
        let (viewer, admin) = try await Self.viewerAndAdmin(in: store, at: now)
        var acmeRun: RunID?
        for (tenant, tokens) in [("acme", 1000), ("globex", 3000)] {
            var configuration = RunConfiguration(model: "gpt-4o-mini")
            configuration.tenant = tenant
            let id = RunID.make()
            let created = try await store.createRun(id: id, goal: tenant, configuration: configuration, at: now)
            if tenant == "acme" { acmeRun = id }
            let key = ActivityKey(step: "plan", attempt: 1, callIndex: 1)
            let answer = ChatResponse(
                message: .assistant("{}"), finishReason: .stop, usage: Usage(inputTokens: tokens, outputTokens: tokens / 10),
                model: "gpt-4o-mini-2024-07-18")
            _ = try await store.append(
                [.activityStarted(key: key, kind: .model(purpose: .plan)), .activityCompleted(key: key, result: .model(answer))], to: id,
                expectedSequence: created.lastSequence, at: now)
        }
        try await APITestServer.with(store: store, access: .keys(store), worker: false) { api in
            func usage(_ key: String, _ query: String = "") async throws -> (status: Int, body: JSONValue) {
                let answer = try await api.send(.GET, "/v1/usage" + query, headers: [("Authorization", "Bearer \(key)")])
                return (answer.status, try JSONValue.parse(answer.body))
            }
            let own = try await usage(viewer.key)
            #expect(own.status == 200 && own.body["total"]?["inputTokens"]?.intValue == 1000, "\(own.body)")
            #expect(own.body["tenant"]?.stringValue == "acme", "the answer names the caller's tenant")
            #expect(try await usage(viewer.key, "?since=2000-01-01T00:00:00Z").status == 400, "at most 366 days")
            let expected = try #require(PriceTable.builtIn.cost(of: Usage(inputTokens: 1000, outputTokens: 100), model: "gpt-4o-mini"))
            #expect(own.body["total"]?["usd"]?.stringValue == "\(expected)" && own.body["rows"]?.arrayValue?.count == 1)
            #expect(try await usage(viewer.key, "?tenant=globex").body["total"]?["modelCalls"]?.intValue == 0)
            let all = try await usage(admin.key, "?by=tenant")
            #expect(all.body["rows"]?.arrayValue?.compactMap { $0["key"]?.stringValue } == ["acme", "globex"], "\(all.body)")
            #expect(all.body["total"]?["inputTokens"]?.intValue == 4000)
            #expect(try await usage(admin.key, "?by=week").status == 400)
            #expect(try await usage(admin.key, "?since=2999-01-01T00:00:00Z").body["total"]?["modelCalls"]?.intValue == 0)
            // The run document carries the same cost.
            let run = try await api.send(.GET, "/v1/runs/\(try #require(acmeRun))", headers: [("Authorization", "Bearer \(viewer.key)")])
            let document = try JSONValue.parse(run.body)
            #expect(document["cost"]?["usd"]?.stringValue == "\(expected)", "\(run.body)")
            #expect(document["cost"]?["byModel"]?.arrayValue?.first?["model"]?.stringValue == "gpt-4o-mini-2024-07-18")
        }
    }

    /// A viewer lists its own tenant's runs only, even when it asks for another's; an admin lists
    /// every tenant's, or one tenant's when it asks.
    @Test func listingsHoldTheCallersTenantOnly() async throws {
        let store = InMemoryRunStore()
        let now = Date()
        let (viewer, admin) = try await Self.viewerAndAdmin(in: store, at: now)
        for tenant in ["acme", "globex"] {
            var configuration = RunConfiguration(model: "mock")
            configuration.tenant = tenant
            _ = try await store.createRun(id: RunID.make(), goal: tenant, configuration: configuration, at: now)
        }
        try await APITestServer.with(store: store, access: .keys(store), worker: false) { api in
            func tenants(_ key: String, _ query: String = "") async throws -> [String] {
                let answer = try await api.send(.GET, "/v1/runs" + query, headers: [("Authorization", "Bearer \(key)")])
                return (try JSONValue.parse(answer.body)["runs"]?.arrayValue ?? []).compactMap { $0["tenant"]?.stringValue }.sorted()
            }
            #expect(try await tenants(viewer.key) == ["acme"])
            #expect(try await tenants(viewer.key, "?tenant=globex") == [])
            #expect(try await tenants(admin.key) == ["acme", "globex"])
            #expect(try await tenants(admin.key, "?tenant=globex") == ["globex"])

            // A run created by a key is its tenant's; an admin's runs are the admin's tenant's.
            let created = try await api.send(
                .POST, "/v1/runs", body: #"{"goal": "Count"}"#, headers: [("Authorization", "Bearer \(admin.key)")])
            #expect(try JSONValue.parse(created.body)["tenant"] == "ops")
        }
    }

    /// The same Idempotency-Key used by two tenants makes two runs, and one tenant's retry never
    /// finds (or removes the workspace of) the other's run.
    @Test func idempotencyKeysAreEachTenantsOwn() async throws {
        let store = InMemoryRunStore()
        let now = Date()
        let first = try APIKeys.make(tenant: "acme", role: .operator, name: nil, expiresAt: nil, at: now)
        let second = try APIKeys.make(tenant: "globex", role: .operator, name: nil, expiresAt: nil, at: now)
        try await store.createKey(first.record)
        try await store.createKey(second.record)
        try await APITestServer.with(store: store, access: .keys(store), worker: false) { api in
            var ids: [String] = []
            for key in [first.key, second.key] {
                let answer = try await api.send(
                    .POST, "/v1/runs", body: #"{"goal": "Count"}"#,
                    headers: [("Authorization", "Bearer \(key)"), ("Idempotency-Key", "same")])
                #expect(answer.status == 201, "\(answer.body)")
                ids.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue))
            }
            #expect(ids[0] != ids[1])
            for id in ids {
                let workspace = try #require(try await store.run(RunID(id))?.configuration.workspace)
                #expect(FileManager.default.fileExists(atPath: workspace))
            }
        }
    }

    /// Keys made through the API: the key once in the answer, never in a listing; last use
    /// recorded in batches; revoked keys refused from the next request on.
    @Test func keysAreMadeListedUsedAndRevokedThroughTheAPI() async throws {
        let store = InMemoryRunStore()
        let admin = try APIKeys.make(tenant: "ops", role: .admin, name: "root", expiresAt: nil, at: Date())
        try await store.createKey(admin.record)
        try await APITestServer.with(store: store, access: .keys(store), worker: false) { api in
            let auth = [("Authorization", "Bearer \(admin.key)")]
            let made = try await api.send(
                .POST, "/v1/keys", body: #"{"tenant": "acme", "role": "operator", "name": "ci", "expiresIn": "30d"}"#, headers: auth)
            #expect(made.status == 201, "\(made.body)")
            let document = try JSONValue.parse(made.body)
            let key = try #require(document["key"]?.stringValue)
            let id = try #require(document["apiKey"]?["id"]?.stringValue)
            #expect(document["apiKey"]?["active"] == true && document["apiKey"]?["expiresAt"] != nil)
            let listed = try await api.send(.GET, "/v1/keys", headers: auth)
            #expect(listed.body.contains(id) && !listed.body.contains(key) && !listed.body.contains("digest"), "\(listed.body)")

            let used = try await api.send(.GET, "/v1/runs", headers: [("Authorization", "Bearer \(key)")])
            #expect(used.status == 200)
            #expect(try await store.key(id: id)?.lastUsedAt == nil, "uses are not written one request at a time")
            try await api.server.keyUses.flush(to: store)
            let lastUse = try await store.key(id: id)?.lastUsedAt
            #expect(lastUse != nil, "a flush records the last use")

            for (body, field) in [
                (#"{"tenant": "Acme!", "role": "viewer"}"#, "tenant"),
                (#"{"tenant": "acme", "role": "viewer", "expiresIn": "forever"}"#, "expiresIn"),
                (#"{"tenant": "acme", "role": "root"}"#, "role"),
            ] {
                let refused = try await api.send(.POST, "/v1/keys", body: body, headers: auth)
                #expect(refused.status == 400 && refused.body.contains(field), "\(refused.body)")
            }
            #expect(try await api.send(.POST, "/v1/keys/key_nothing/revoke", headers: auth).status == 404)
            #expect(try await api.send(.POST, "/v1/keys/\(id)/revoke", headers: auth).status == 200)
            let after = try await api.send(.GET, "/v1/runs", headers: [("Authorization", "Bearer \(key)")])
            #expect(after.status == 401)
        }
    }

    /// The keys table of a SQLite store, read directly: no key in clear text, only digests.
    @Test func theStoreHoldsNoKeyInClearText() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let made = try APIKeys.make(tenant: "acme", role: .admin, name: "root", expiresAt: nil, at: Date())
            try await SQLiteRunStore.withStore(path: path) { store in try await store.createKey(made.record) }
            var bytes = Data()
            for file in [path, path + "-wal"] { bytes += (FileManager.default.contents(atPath: file) ?? Data()) }
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(!text.contains(made.key) && !text.contains(made.key.dropFirst(16)), "the key itself is not stored")
            #expect(text.contains(made.record.digest), "its SHA-256 is")
        }
    }

    /// The bearer scheme in any case, with spaces or tabs; loopback means addresses, not names.
    @Test func headersAndHostsAreReadStrictly() async throws {
        let store = InMemoryRunStore()
        let made = try APIKeys.make(tenant: "acme", role: .viewer, name: nil, expiresAt: nil, at: Date())
        try await store.createKey(made.record)
        try await APITestServer.with(store: store, access: .keys(store), worker: false) { api in
            for header in ["Bearer \(made.key)", "bearer \(made.key)", "BEARER  \(made.key)", "Bearer\t\(made.key)"] {
                let status = try await api.send(.GET, "/v1/runs", headers: [("Authorization", header)]).status
                #expect(status == 200, "\(header)")
            }
            for header in ["Basic \(made.key)", "Bearer", "Bearer \(made.key) extra", made.key] {
                let status = try await api.send(.GET, "/v1/runs", headers: [("Authorization", header)]).status
                #expect(status == 401, "\(header)")
            }
            // Public routes stay open whatever key is sent.
            #expect(try await api.send(.GET, "/healthz", headers: [("Authorization", "Bearer nonsense")]).status == 200)
        }
        #expect(Loopback.isLoopback("127.0.0.1") && Loopback.isLoopback("127.1.2.3") && Loopback.isLoopback("::1"))
        #expect(Loopback.isLoopback("localhost") && Loopback.isLoopback("[::1]"))
        for host in ["127.evil.example", "127.0.0.1.nip.io", "0.0.0.0", "10.0.0.1", "127.0.0.256", "evil.example", ""] {
            #expect(!Loopback.isLoopback(host), "\(host)")
        }
        // Without keys, a request addressed to another host (DNS rebinding) is refused.
        try await APITestServer.with(worker: false) { api in
            #expect(try await api.send(.GET, "/v1/runs").status == 200)
            let rebound = try await api.send(.GET, "/v1/runs", headers: [("Host", "evil.example:\(api.port)")])
            #expect(rebound.status == 403, "\(rebound.body)")
        }
    }

    /// An event stream opened with a key ends once the key is revoked.
    @Test func anEventStreamEndsWhenItsKeyIsRevoked() async throws {
        let store = InMemoryRunStore()
        let made = try APIKeys.make(tenant: "acme", role: .viewer, name: nil, expiresAt: nil, at: Date())
        try await store.createKey(made.record)
        var configuration = RunConfiguration(model: "mock")
        configuration.tenant = "acme"
        let id = RunID.make()
        _ = try await store.createRun(id: id, goal: "waits", configuration: configuration, at: Date())
        try await APITestServer.with(store: store, access: .keys(store), worker: false) { api in
            async let stream = api.send(.GET, "/v1/runs/\(id)/events", headers: [("Authorization", "Bearer \(made.key)")])
            try await eventually("the stream is open") { api.server.openStreams(keyID: made.record.id) == 1 }
            _ = try await store.revokeKey(id: made.record.id, tenant: nil, at: Date())
            let answer = try await stream
            #expect(answer.status == 200)
            #expect(APITestServer.events(answer.body).map(\.event) == ["runCreated"])
        }
    }
}
