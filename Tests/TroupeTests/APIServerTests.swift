import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import OpenAPIAsyncHTTPClient
import ServiceLifecycle
import Testing
import Troupe
import TroupeAPI
import TroupeServer
import TroupeTesting

/// An API server on 127.0.0.1 (a free port) over `store`, with a worker driving its runs in the
/// same process — through the real HTTP stack.
struct APITestServer {
    let server: APIServer
    let port: Int
    let model: PlayingModel

    var baseURL: String { "http://127.0.0.1:\(port)" }

    static func with<T: Sendable>(
        store: any RunStore = InMemoryRunStore(), access: APIAccess = .open, model: PlayingModel = PlayingModel(), worker: Bool = true,
        tools: ToolRegistry? = nil, keepAlive: Duration = .seconds(15), configure: (inout APIServer) -> Void = { _ in },
        _ body: (APITestServer) async throws -> T
    ) async throws -> T {
        try await withTemporaryDirectory { root in
            var configured = APIServer(
                store: store, access: access, runDefaults: RunConfiguration(model: "mock", tools: ["fs"]), models: ["mock", "other"],
                allowedTools: ["fs"], workspaceRoot: root, owner: "api-test", logger: quietLogger)
            configured.pollInterval = .milliseconds(20)
            configured.keyCheckInterval = .milliseconds(50)
            configured.keepAliveInterval = keepAlive
            configured.rates = .unlimited
            configure(&configured)
            let server = configured
            let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
            let application = try server.application(host: "127.0.0.1", port: 0) { port in portSink.yield(port) }
            let services = ServiceGroup(
                configuration: ServiceGroupConfiguration(services: [application], gracefulShutdownSignals: [], logger: quietLogger))
            let tools = try tools ?? ToolRegistry([CountingTool()])
            let runWorker = RunWorker(
                store: store, owner: "api-worker", pollInterval: .seconds(3600), logger: quietLogger,
                equip: { _ in RunEquipment(model: model, tools: tools) })
            let running = Task { try await services.run() }
            let working = Task { if worker { await runWorker.run(until: server.drain) } }
            defer {
                running.cancel()
                working.cancel()
            }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw CLIError(message: "the server did not start") }
            let result = try await body(APITestServer(server: server, port: port, model: model))
            server.drain.begin()
            await working.value
            await services.triggerGracefulShutdown()
            try await running.value
            return result
        }
    }

    /// The generated client, as applications use it.
    var client: Client {
        Client(serverURL: URL(string: baseURL)!, configuration: APIDates.configuration, transport: AsyncHTTPClientTransport())
    }

    /// A raw request, for what a generated client would never send.
    func send(
        _ method: HTTPMethod, _ path: String, body: String? = nil, headers: [(String, String)] = []
    ) async throws -> (status: Int, body: String, headers: HTTPHeaders) {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 16 << 20)
        return (Int(response.status.code), String(buffer: bytes), response.headers)
    }

    /// The error document of a refusal.
    static func error(_ body: String) -> (code: String, message: String)? {
        guard let error = try? JSONValue.parse(body)["error"] else { return nil }
        return (error["code"]?.stringValue ?? "", error["message"]?.stringValue ?? "")
    }

    /// SSE events of a stream read to its end: (id, event, data).
    static func events(_ text: String) -> [(id: Int?, event: String, data: String)] {
        text.components(separatedBy: "\n\n").compactMap { block in
            var id: Int?
            var event = ""
            var data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("id: ") { id = Int(line.dropFirst(4)) }
                if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") { data = String(line.dropFirst(6)) }
            }
            return event.isEmpty ? nil : (id, event, data)
        }
    }
}

@Suite struct APIServerTests {
    @Test func aRunIsCreatedFollowedLiveAndReadBack() async throws {
        try await APITestServer.with(model: PlayingModel(steps: 2)) { api in
            let created = try await api.client.createRun(
                body: .json(.init(goal: "Echo twice", metadata: .init(additionalProperties: ["team": "a"]))))
            let run = try created.created.body.json
            #expect(run.status == .pending || run.status == .running)
            #expect(run.configuration.additionalProperties.value["workspace"] as? String == api.server.workspaceRoot + "/" + run.id)

            // From the start: every journal event once, in order, and the stream ends with the run.
            let stream = try await api.send(.GET, "/v1/runs/\(run.id)/events")
            #expect(stream.status == 200)
            #expect(stream.headers["content-type"].first?.hasPrefix("text/event-stream") == true)
            let events = APITestServer.events(stream.body)
            #expect(events.map(\.id) == Array(1...events.count).map { Optional($0) })
            #expect(events.first?.event == "runCreated")
            #expect(events.last?.event == "runSucceeded")

            let read = try await api.client.getRun(path: .init(id: run.id)).ok.body.json
            #expect(read.status == .succeeded)
            #expect(read.steps.count == 2)
            #expect(read.events == events.count)
            let listed = try await api.client.listRuns(query: .init(metadata: ["team=a"])).ok.body.json
            #expect(listed.runs.map(\.id) == [run.id])
            #expect(try await api.client.listRuns(query: .init(metadata: ["team=b"])).ok.body.json.runs.isEmpty)
        }
    }

    @Test func aStreamResumedWithLastEventIDLosesAndRepeatsNothing() async throws {
        try await APITestServer.with { api in
            let run = try await api.client.createRun(body: .json(.init(goal: "Echo"))).created.body.json
            let whole = APITestServer.events(try await api.send(.GET, "/v1/runs/\(run.id)/events").body)
            let resumed = APITestServer.events(
                try await api.send(.GET, "/v1/runs/\(run.id)/events", headers: [("Last-Event-ID", "3")]).body)
            #expect(resumed.map(\.id) == whole.dropFirst(3).map(\.id))
            #expect(resumed.map(\.data) == whole.dropFirst(3).map(\.data))
            let after = APITestServer.events(try await api.send(.GET, "/v1/runs/\(run.id)/events?after=\(whole.count - 1)").body)
            #expect(after.map(\.id) == [whole.count])
        }
    }

    /// `?tokens=true`: the streamed text of each model call comes live as `token` events (no
    /// `id:`), the same text the journal records when the call completes.
    @Test func liveTokensComeWithTheJournal() async throws {
        let model = PlayingModel(steps: 2, holding: true)
        try await APITestServer.with(model: model) { api in
            let run = try await api.client.createRun(body: .json(.init(goal: "Echo twice", stream: true))).created.body.json
            let response = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: api.baseURL + "/v1/runs/\(run.id)/events?tokens=true"), timeout: .seconds(30))
            #expect(response.status == .ok)
            var body = ""
            var chunks = response.body.makeAsyncIterator()
            // The first journal event is there: the stream follows the run's live text from here on.
            while !body.contains("event: runCreated"), let chunk = try await chunks.next() { body += String(buffer: chunk) }
            try await eventually("an executor call is held") { model.heldCalls >= 1 }
            model.release()
            while let chunk = try await chunks.next() { body += String(buffer: chunk) }

            let events = APITestServer.events(body)
            #expect(events.last?.event == "runSucceeded")
            let journaled = events.filter { $0.event != "token" }
            #expect(journaled.map(\.id) == Array(1...journaled.count).map { Optional($0) })
            let tokens = events.filter { $0.event == "token" }
            #expect(tokens.count >= 2, "\(body)")
            #expect(tokens.allSatisfy { $0.id == nil })
            for token in tokens {
                let piece = try JSONCoding.decode(LiveText.self, from: Data(token.data.utf8))
                #expect(piece.run.rawValue == run.id)
                // The call's completed answer in the journal holds the same text.
                let answers = try journaled.map { try JSONCoding.decode(RunEventRecord.self, from: Data($0.data.utf8)).event }
                    .compactMap { event -> String? in
                        guard case .activityCompleted(piece.activity, .model(let response)) = event else { return nil }
                        return response.message.content
                    }
                #expect(answers == [piece.text], "\(piece)")
            }
            // Without tokens=true, none.
            let plain = try await api.send(.GET, "/v1/runs/\(run.id)/events")
            #expect(!plain.body.contains("event: token"))
        }
    }

    @Test func anIdempotencyKeyMakesRetriesSafe() async throws {
        let store = InMemoryRunStore()
        try await APITestServer.with(store: store, worker: false) { api in
            let headers = [("Idempotency-Key", "order-42")]
            let first = try await api.send(.POST, "/v1/runs", body: #"{"goal": "Ship order 42"}"#, headers: headers)
            #expect(first.status == 201)
            let retry = try await api.send(.POST, "/v1/runs", body: #"{"goal": "Ship order 42"}"#, headers: headers)
            #expect(retry.status == 200)
            #expect(try JSONValue.parse(retry.body)["id"] == JSONValue.parse(first.body)["id"])
            let other = try await api.send(.POST, "/v1/runs", body: #"{"goal": "Ship order 43"}"#, headers: headers)
            #expect(other.status == 409, "\(other.body)")
            #expect(try await store.runs(RunQuery()).count == 1)
            // Racing retries create the run once.
            let racing = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try await api.send(.POST, "/v1/runs", body: #"{"goal": "Race"}"#, headers: [("Idempotency-Key", "race")]).status
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(racing.filter { $0 == 201 }.count == 1)
            #expect(racing.filter { $0 == 200 }.count == 7)
            #expect(try await store.runs(RunQuery()).count == 2)
            // Racing requests with one key and different bodies: one run, the others refused, and
            // the run's workspace intact.
            let mixed = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        try await api.send(
                            .POST, "/v1/runs", body: "{\"goal\": \"Mixed \(index)\"}", headers: [("Idempotency-Key", "mixed")]
                        )
                        .status
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(mixed.filter { $0 == 201 }.count == 1)
            #expect(mixed.filter { $0 == 409 }.count == 7, "\(mixed)")
            let runs = try await store.runs(RunQuery())
            #expect(runs.count == 3)
            for run in runs { #expect(FileManager.default.fileExists(atPath: run.configuration.workspace)) }
            let bad = try await api.send(.POST, "/v1/runs", body: #"{"goal": "x"}"#, headers: [("Idempotency-Key", "has space")])
            #expect(bad.status == 400)
        }
    }

    @Test func pagesListEveryRunOnceNewestFirst() async throws {
        try await APITestServer.with(worker: false) { api in
            var ids: [String] = []
            for index in 0..<5 {
                ids.append(try await api.client.createRun(body: .json(.init(goal: "Run \(index)"))).created.body.json.id)
            }
            var seen: [String] = []
            var cursor: String?
            repeat {
                let page = try await api.client.listRuns(query: .init(limit: 2, cursor: cursor)).ok.body.json
                #expect(page.runs.count <= 2)
                seen += page.runs.map(\.id)
                cursor = page.nextCursor
            } while cursor != nil
            #expect(Set(seen) == Set(ids))
            #expect(seen.count == 5)
            let pending = try await api.client.listRuns(query: .init(status: [.pending])).ok.body.json
            #expect(pending.runs.count == 5)
        }
    }

    @Test func cancelAndResumeAreIdempotent() async throws {
        try await APITestServer.with(worker: false) { api in
            let run = try await api.client.createRun(body: .json(.init(goal: "Wait"))).created.body.json
            let cancelled = try await api.client.cancelRun(path: .init(id: run.id), body: .json(.init(reason: "changed my mind")))
            #expect(try cancelled.ok.body.json.status == .cancelled)
            #expect(try await api.client.cancelRun(path: .init(id: run.id)).ok.body.json.status == .cancelled)
            #expect(try await api.client.resumeRun(path: .init(id: run.id)).ok.body.json.status == .cancelled)
            let other = try await api.client.createRun(body: .json(.init(goal: "Later"))).created.body.json
            #expect(try await api.client.resumeRun(path: .init(id: other.id)).ok.body.json.status == .pending)
        }
    }

    @Test func refusedRequestsGetAClearErrorAndWriteNothing() async throws {
        let store = InMemoryRunStore()
        try await APITestServer.with(store: store, worker: false) { api in
            let cases: [Refusal] = [
                Refusal(.POST, "/v1/runs", "{not json", 400, "invalidInput"),
                Refusal(.POST, "/v1/runs", #"{"goal": "x", "maxSteps": "ten"}"#, 400, "maxSteps"),
                Refusal(.POST, "/v1/runs", #"{"goal": "x", "workspace": "/etc"}"#, 400, "Unknown field"),
                Refusal(.POST, "/v1/runs", #"{"model": "mock"}"#, 400, "goal"),
                Refusal(.POST, "/v1/runs", #"{"goal": "   "}"#, 400, "The goal is empty"),
                Refusal(.POST, "/v1/runs", #"{"goal": "x", "model": "gpt-5-expensive"}"#, 400, "not one this server offers"),
                Refusal(.POST, "/v1/runs", #"{"goal": "x", "tools": ["shell"]}"#, 403, "not allowed"),
                Refusal(.POST, "/v1/runs", #"{"goal": "x", "tools": ["shell_run"]}"#, 403, "not allowed"),
                Refusal(.POST, "/v1/runs", #"{"goal": "x", "tools": ["mcp:time/now"]}"#, 403, "not allowed"),
                Refusal(.POST, "/v1/runs", #"{"goal": "x", "tools": ["fs_delete_everything"]}"#, 400, "Unknown tool"),
                Refusal(.POST, "/v1/runs", #"{"goal": "x", "tools": ["mcp:../x"]}"#, 400, "Unknown tool"),
                Refusal(.POST, "/v1/runs", #"{"goal": "x", "maxSteps": 0}"#, 400, "maxSteps"),
                Refusal(
                    .POST, "/v1/runs", "{\"goal\": \"" + String(repeating: "x", count: APIServer.maxBodyBytes) + "\"}", 413,
                    "payloadTooLarge"),
                Refusal(.GET, "/v1/runs?limit=500", nil, 400, "limit"),
                Refusal(.GET, "/v1/runs?cursor=%%%", nil, 400, "cursor"),
                Refusal(.GET, "/v1/runs?cursor=" + cursor("9223372036854775807:x"), nil, 400, "cursor"),
                Refusal(.GET, "/v1/runs?cursor=" + cursor("-9223372036854775808:x"), nil, 400, "cursor"),
                Refusal(.GET, "/v1/runs?cursor=" + cursor("99999999999999999999:x"), nil, 400, "cursor"),
                Refusal(.GET, "/v1/runs?createdAfter=9999-12-31T23:59:59Z", nil, 200, ""),
                Refusal(.POST, "/v1/runs/nope/cancel", "{\"reason\": \"" + String(repeating: "r", count: 1001) + "\"}", 400, "reason"),
                Refusal(.GET, "/v1/runs?status=bogus", nil, 400, "invalidInput"),
                Refusal(.GET, "/v1/runs/nope", nil, 404, "notFound"),
                Refusal(.GET, "/v1/runs/nope/events", nil, 404, "notFound"),
                Refusal(.POST, "/v1/runs/nope/cancel", nil, 404, "notFound"),
                Refusal(.GET, "/v1/nothing-here", nil, 404, "notFound"),
                Refusal(.DELETE, "/v1/runs", nil, 405, "methodNotAllowed"),
                Refusal(.GET, "/v1/runs/x/cancel", nil, 405, "POST"),
            ]
            for refusal in cases {
                let (method, path, body, status, text) = (refusal.method, refusal.path, refusal.body, refusal.status, refusal.text)
                if status == 200 {
                    #expect(try await api.send(method, path, body: body).status == 200, "\(path)")
                    continue
                }
                let response = try await api.send(method, path, body: body)
                #expect(response.status == status, "\(method) \(path) \(body?.prefix(60) ?? ""): \(response.body.prefix(300))")
                let error = APITestServer.error(response.body)
                #expect(error != nil, "\(method) \(path): not an error document: \(response.body.prefix(300))")
                let said = (error?.code ?? "") + " " + (error?.message ?? "")
                #expect(
                    said.contains(text),
                    "\(method) \(path) \(body?.prefix(60) ?? ""): \(response.body.prefix(300))")
            }
            #expect(try await store.runs(RunQuery()).isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: api.server.workspaceRoot).isEmpty)
        }
    }

    @Test func idleStreamsGetKeepAlivesAndADrainClosesThem() async throws {
        try await APITestServer.with(worker: false, keepAlive: .milliseconds(50)) { api in
            let run = try await api.client.createRun(body: .json(.init(goal: "Nobody drives this"))).created.body.json
            let request = HTTPClientRequest(url: api.baseURL + "/v1/runs/\(run.id)/events")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            var text = ""
            var drained = false
            for try await chunk in response.body {
                text += String(buffer: chunk)
                if text.contains(": keep-alive") && !drained {
                    drained = true
                    api.server.drain.begin()
                }
            }
            // The stream ended (the drain), after the journal's one event and a keep-alive.
            #expect(APITestServer.events(text).map(\.event) == ["runCreated"])
            #expect(drained)
        }
    }

    @Test func healthReadinessAndTheDrain() async throws {
        try await APITestServer.with(worker: false) { api in
            #expect(try await api.send(.GET, "/healthz").status == 200)
            #expect(try await api.send(.GET, "/readyz").status == 200)
            api.server.drain.begin()
            let ready = try await api.send(.GET, "/readyz")
            #expect(ready.status == 503)
            #expect(ready.body.contains("draining"))
            #expect(try await api.send(.GET, "/healthz").status == 200)
            let refused = try await api.send(.POST, "/v1/runs", body: #"{"goal": "x"}"#)
            #expect(refused.status == 503)
            #expect(APITestServer.error(refused.body)?.code == "unavailable")
        }
    }

    @Test func theOpenAPIDocumentIsServedAsWritten() async throws {
        try await APITestServer.with(worker: false) { api in
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let file = try String(contentsOf: root.appendingPathComponent("Sources/TroupeAPI/openapi.yaml"), encoding: .utf8)
            let yaml = try await api.send(.GET, "/openapi.yaml")
            #expect(yaml.status == 200)
            #expect(yaml.body == file)
            let json = try JSONValue.parse(try await api.send(.GET, "/openapi.json").body)
            #expect(json["openapi"] == "3.1.0")
            #expect(json["paths"]?["/v1/runs"]?["post"]?["operationId"] == "createRun")
        }
    }
}

/// A cursor as the server would encode it, holding `text`.
private func cursor(_ text: String) -> String {
    Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

/// A request the API must refuse: the status, and a fragment of the error's code or message.
private struct Refusal {
    var method: HTTPMethod
    var path: String
    var body: String?
    var status: Int
    var text: String

    init(_ method: HTTPMethod, _ path: String, _ body: String?, _ status: Int, _ text: String) {
        (self.method, self.path, self.body, self.status, self.text) = (method, path, body, status, text)
    }
}
