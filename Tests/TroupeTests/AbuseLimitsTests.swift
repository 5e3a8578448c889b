import Foundation
import Synchronization
import Testing
import Troupe
import TroupeServer
import TroupeTesting

/// Abuse limits: request rates per key and per tenant (429 with Retry-After), open event streams
/// per key, and per-tenant caps on plans and tool output.
@Suite struct AbuseLimitsTests {
    static func keys(_ store: InMemoryRunStore, _ specs: [(String, String)]) async throws -> [String: String] {
        var keys: [String: String] = [:]
        for (name, tenant) in specs {
            let made = try APIKeys.make(tenant: tenant, role: .operator, name: name, expiresAt: nil, at: Date())
            try await store.createKey(made.record)
            keys[name] = made.key
        }
        return keys
    }

    @Test func requestRatesAreLimitedPerKeyAndPerTenant() async throws {
        let store = InMemoryRunStore()
        let keys = try await Self.keys(store, [("a1", "acme"), ("a2", "acme"), ("g", "globex")])
        let clock = Mutex(Date())
        try await APITestServer.with(
            store: store, access: .keys(store), worker: false,
            configure: {
                $0.rates = RequestRates(perKey: 1, perKeyBurst: 2, perTenant: 2, perTenantBurst: 3)
                $0.now = { clock.withLock { $0 } }
            }
        ) { api in
            func get(_ key: String) async throws -> (status: Int, retryAfter: String?, body: String) {
                let answer = try await api.send(.GET, "/v1/runs", headers: [("Authorization", "Bearer \(keys[key]!)")])
                return (answer.status, answer.headers["Retry-After"].first, answer.body)
            }
            #expect(try await get("a1").status == 200)
            #expect(try await get("a1").status == 200)
            let overKey = try await get("a1")
            #expect(overKey.status == 429 && overKey.retryAfter == "1" && overKey.body.contains("from this key"), "\(overKey)")
            // The tenant's bucket holds 3: a1's two and one more from a2.
            #expect(try await get("a2").status == 200)
            let overTenant = try await get("a2")
            #expect(overTenant.status == 429 && overTenant.body.contains("from this tenant"), "\(overTenant)")
            // Another tenant is not held back, and health checks never are.
            #expect(try await get("g").status == 200)
            for _ in 0..<5 { #expect(try await api.send(.GET, "/healthz").status == 200) }
            // A second later the buckets have refilled.
            clock.withLock { $0 += 1.5 }
            #expect(try await get("a1").status == 200)
        }
    }

    @Test func aKeyMayHoldOnlySoManyEventStreams() async throws {
        let store = InMemoryRunStore()
        let keys = try await Self.keys(store, [("a", "acme")])
        var configuration = RunConfiguration(model: "mock")
        configuration.tenant = "acme"
        let id = RunID.make()
        _ = try await store.createRun(id: id, goal: "waits", configuration: configuration, at: Date())
        let keyID = try #require(try await store.keys(tenant: "acme").first?.id)
        try await APITestServer.with(
            store: store, access: .keys(store), worker: false, keepAlive: .milliseconds(50), configure: { $0.maxStreamsPerKey = 1 }
        ) { api in
            let headers = [("Authorization", "Bearer \(keys["a"]!)")]
            let first = Task { try await api.send(.GET, "/v1/runs/\(id)/events", headers: headers) }
            try await eventually("the first stream is open") { api.server.openStreams(keyID: keyID) == 1 }
            let second = try await api.send(.GET, "/v1/runs/\(id)/events", headers: headers)
            #expect(second.status == 429 && second.headers["Retry-After"].first != nil, "\(second.body)")
            first.cancel()
            try await eventually("the first stream's place is given back") { api.server.openStreams(keyID: keyID) == 0 }
            _ = try await store.cancelRun(id, reason: "done")
            let third = try await api.send(.GET, "/v1/runs/\(id)/events", headers: headers)
            #expect(third.status == 200)
        }
    }

    @Test func aTenantsRunsGetItsPlanAndToolOutputCaps() async throws {
        try await APITestServer.with(
            worker: false, configure: { $0.tenantLimits["default"] = TenantRunLimits(maxSteps: 3, maxToolOutputCharacters: 500) }
        ) { api in
            let over = try await api.send(.POST, "/v1/runs", body: #"{"goal": "x", "maxSteps": 5}"#)
            #expect(over.status == 400 && over.body.contains("at most 3 for this tenant"), "\(over.body)")
            let run = try await api.client.createRun(body: .json(.init(goal: "x"))).created.body.json
            #expect(run.configuration.additionalProperties.value["maxSteps"] as? Int == 3)
            #expect(run.configuration.additionalProperties.value["maxToolOutputCharacters"] as? Int == 500)
        }
    }

    /// A tool with a long answer.
    struct Verbose: Tool {
        let name = "verbose"
        let description = "Says a lot."
        let effect = ToolEffect.readOnly
        let parameters: JSONSchema = .object([])
        func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
            ToolOutput(String(repeating: "x", count: 5_000))
        }
    }

    @Test func aRunsToolOutputCapClipsWhatTheModelIsSent() async throws {
        let model = ScriptedModel([
            .response(.plan(plan([("s1", [], [])]))), .response(.toolCall("verbose", "{}")), .response(.text("done")),
        ])
        var configuration = RunConfiguration(model: "m")
        configuration.maxToolOutputCharacters = 300
        let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [Verbose()])
            .run(goal: "Talk", configuration: configuration)
        #expect(final.status == .succeeded)
        let told = try #require(model.requests.last?.messages.last?.content)
        #expect(told.hasPrefix(String(repeating: "x", count: 300) + "\n…[output truncated: 4700 more characters]"), "\(told.prefix(400))")
    }
}
