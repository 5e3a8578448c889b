import Foundation
import Logging
import Testing
import Troupe
import TroupeTesting

/// The redaction layer: configured secrets and credential shapes never reach the journal, the
/// API's answers or the logs — while the model still reads what its tool returned in the run.
@Suite struct RedactionTests {
    static let shapes: [String] = [
        "sk-proj-" + String(repeating: "a1B2", count: 10),
        "sk-ant-api03-" + String(repeating: "Zz9_", count: 8),
        "sk_live_" + String(repeating: "4eC39HqLyjWDarjtT1zdp7dc", count: 1),
        "ghp_" + String(repeating: "A1b2C3d4E5", count: 4),
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "xoxb-123456789012-abcdefghijklmnop",
        "AIzaSyA-1234567890abcdefghijklmnopqrstu",
        "trp_" + String(repeating: "Ab3", count: 17) + "x",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ]

    @Test(arguments: shapes)
    func credentialShapesAreMasked(_ secret: String) throws {
        let text = "before \(secret) after"
        let masked = Redactor().redact(text)
        #expect(!masked.contains(secret), "\(masked)")
        #expect(masked.hasPrefix("before ") && masked.hasSuffix(" after") && masked.contains(Redactor.mask), "\(masked)")
    }

    @Test func bearerTokensPasswordsAndPrivateKeysAreMaskedAndTheRestKept() {
        let redactor = Redactor()
        #expect(redactor.redact("Authorization: Bearer abc.DEF-123_456") == "Authorization: Bearer \(Redactor.mask)")
        #expect(redactor.redact("bearer   zzzz1234zzzz") == "bearer   \(Redactor.mask)")
        #expect(
            redactor.redact("postgres://troupe:s3cr3t-pw@db.internal:5432/runs")
                == "postgres://troupe:\(Redactor.mask)@db.internal:5432/runs")
        #expect(redactor.redact("host=db password=hunter22 user=x") == "host=db password=\(Redactor.mask) user=x")
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY-----"
        #expect(redactor.redact("key:\n\(pem)\nend") == "key:\n\(Redactor.mask)\nend")
        #expect(redactor.redact("cut: -----BEGIN PRIVATE KEY-----\nMIIEv") == "cut: \(Redactor.mask)")
        // Ordinary text is left alone.
        for plain in [
            "skip the task-list", "the ghost of sk-8", "https://example.com/a:b", "password reset link", "user@example.com",
            "git@github.com:org/repo.git", "Bearer", "eyJ alone", "AKIA1",
        ] {
            #expect(redactor.redact(plain) == plain, "\(plain)")
        }
    }

    @Test func passwordsAndTokensInTheirUsualSurroundingsAreMaskedAndProseIsNot() {
        let redactor = Redactor()
        let m = Redactor.mask
        let key = Self.shapes[0]
        let masked: [(String, String)] = [
            (#"{"password": "hunter22"}"#, #"{"password": "\#(m)"}"#),
            ("password=\"hunter22\" x", "password=\"\(m)\" x"),
            ("DB_PASSWORD=s3cret!", "DB_PASSWORD=\(m)"),
            ("--password=abc123", "--password=\(m)"),
            ("redis://:s3cret@cache:6379", "redis://:\(m)@cache:6379"),
            ("(\(key))", "(\(m))"), ("\"\(key)\"", "\"\(m)\""), ("key=\(key)", "key=\(m)"),
            ("Authorization: BEARER abc123def456", "Authorization: BEARER \(m)"),
            ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----\nafter", "\(m)\nafter"),
        ]
        for (text, expected) in masked { #expect(redactor.redact(text) == expected, "\(text)") }
        for prose in [
            "Use Bearer authentication for the API.", "func login(password: String) -> Bool", "Password: must be 8 chars",
            "pwd: command not found", "PWD=/home/u/proj", "http://localhost:8080?to=bob@example.com", "see docs.example.com.",
        ] {
            #expect(redactor.redact(prose) == prose, "\(prose)")
        }
    }

    @Test func configuredSecretsAreMaskedInEveryTextOfAnEvent() throws {
        let redactor = Redactor()
        redactor.register("short")  // too short to be masked: it would mask ordinary words
        redactor.register("  n\"ss\\word-0123  ")
        #expect(redactor.redact("a short word") == "a short word")
        #expect(redactor.redact("x n\"ss\\word-0123 y") == "x \(Redactor.mask) y")
        let key = ActivityKey(step: "s1", attempt: 1, callIndex: 1)
        let event = RunEvent.activityCompleted(
            key: key, result: .tool(ToolOutput("token:\nn\"ss\\word-0123\nAKIAIOSFODNN7EXAMPLE\nid.\(Self.shapes[8])\tpassword=hunter22")))
        guard case .activityCompleted(_, .tool(let output)) = redactor.redact(event) else {
            Issue.record("the event kept its kind")
            return
        }
        let m = Redactor.mask
        #expect(output.content == "token:\n\(m)\n\(m)\nid.\(m)\tpassword=\(m)")
        // What replay executes is kept: a call's arguments and an edit's.
        let call = ToolCall(id: "c", name: "shell", arguments: #"{"url":"https://u:n\"ss@h","auth":"Bearer abcdef123456"}"#)
        let response = ChatResponse(
            message: .assistant("Bearer abcdef123456", toolCalls: [call]), finishReason: .toolCalls, usage: .zero, model: "m")
        guard case .activityCompleted(_, .model(let kept)) = redactor.redact(.activityCompleted(key: key, result: .model(response))) else {
            Issue.record("the event kept its kind")
            return
        }
        #expect(kept.message.toolCalls == [call] && kept.message.content == "Bearer \(m)")
    }

    @Test func aPrivateKeyCutOffIsMaskedToTheEndAndHostileTextStaysLinear() {
        let redactor = Redactor()
        let clipped = "out:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n…[output truncated: 99 more characters]"
        #expect(redactor.redact(clipped) == "out:\n\(Redactor.mask)")
        // Inputs that would make a backtracking matcher quadratic: answered at once, sensibly.
        for hostile in [
            String(repeating: "-----BEGIN PRIVATE KEY-----", count: 2_400), String(repeating: "eyJ-", count: 16_000),
            String(repeating: "bearer ", count: 9_000), String(repeating: "a://", count: 16_000), String(repeating: "sk-", count: 20_000),
            String(repeating: "password=", count: 7_000), String(repeating: "a.", count: 50_000),
            String(repeating: "eyJaaaaaaaa.", count: 8_000),
        ] {
            let masked = redactor.redact(hostile)
            #expect(masked.utf8.count <= hostile.utf8.count + 10 * Redactor.mask.count)
        }
    }

    /// A tool whose output and error carry secrets.
    struct LeakyTool: Tool {
        let name = "leak"
        let description = "Returns a secret."
        let effect = ToolEffect.readOnly
        let parameters: JSONSchema = .object([.init("fail", .boolean("Fail instead."))])
        let secret: String

        func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
            if arguments["fail"]?.boolValue == true {
                throw TroupeError(.toolFailed, "could not use \(secret) at https://u:\(secret)@example.com")
            }
            return ToolOutput("the key is \(secret) and the other is \(RedactionTests.shapes[1])")
        }
    }

    @Test func aPlantedSecretReachesTheModelButNeitherTheJournalNorTheAPINorTheLogs() async throws {
        let secret = "planted-\(UUID().uuidString)"
        Redactor.shared.register(secret)
        let logged = Recorder<String>()
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let model = ScriptedModel([
                .response(.plan(plan([("s1", ["leak"], [])]))),
                .response(.toolCalls([("leak", #"{"fail": false}"#), ("leak", #"{"fail": true}"#)])),
                .response(.text("Found it: \(secret) and \(Self.shapes[0])")),
            ])
            var logger = Logger(label: "test") { _ in CapturingHandler(lines: logged) }
            logger.logLevel = .trace
            logger = RewritingLogHandler.logger(logger, rewrite: { Redactor.shared.redact($0) })
            let runID = try await SQLiteRunStore.open(path: path).closing { store in
                var driver = RunDriver(
                    store: store, model: model, tools: try ToolRegistry([LeakyTool(secret: secret)]), owner: "d", logger: logger)
                driver.now = { fixedDate }
                let final = try await driver.run(goal: "Find the key", configuration: RunConfiguration(model: "m"))
                #expect(final.status == .succeeded)
                logger.error("the tool said \(secret)", metadata: ["output": "\(Self.shapes[2])"])
                return final.runID
            }
            // The model read the tool's output as it was, within the run.
            let toolMessages = model.requests.last?.messages.filter { $0.role == .tool }.compactMap(\.content) ?? []
            #expect(toolMessages.contains { $0.contains(secret) && $0.contains(Self.shapes[1]) }, "\(toolMessages)")
            #expect(toolMessages.contains { $0.contains("could not use \(secret)") })

            // Nothing the store wrote holds it: read the database's files as bytes.
            for file in try FileManager.default.contentsOfDirectory(atPath: directory) {
                let bytes = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file))
                for planted in [secret, Self.shapes[0], Self.shapes[1]] {
                    #expect(bytes.range(of: Data(planted.utf8)) == nil, "\(file) holds a planted secret")
                }
            }
            // Nor do the API's answers.
            try await SQLiteRunStore.open(path: path).closing { store in
                try await APITestServer.with(store: store, worker: false) { api in
                    for route in ["/v1/runs/\(runID)", "/v1/runs/\(runID)/events", "/v1/runs"] {
                        let answer = try await api.send(.GET, route)
                        #expect(answer.status == 200)
                        #expect(!answer.body.contains(secret) && !answer.body.contains(Self.shapes[0]), "\(route)")
                        #expect(answer.body.contains(Redactor.mask) || route == "/v1/runs", "\(route)")
                    }
                }
            }
            #expect(!logged.all.isEmpty)
            #expect(logged.all.allSatisfy { !$0.contains(secret) && !$0.contains(Self.shapes[2]) }, "\(logged.all)")
        }
    }

    struct CapturingHandler: LogHandler {
        let lines: Recorder<String>
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            lines.add("\(event.message) \(event.metadata ?? [:]) \(metadata)")
        }
    }
}
