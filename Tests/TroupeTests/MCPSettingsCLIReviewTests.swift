import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing
import Troupe
import TroupeSettings
import TroupeTesting

@testable import TroupeMCP

/// Issue 22: the MCP client, the settings and the CLI, one test (or more) per item found in review.
@Suite struct MCPSettingsCLIReviewTests {
    // MARK: 1. resume applies the tool rules the run started with

    private static func settings(_ overrides: [String], environment: [String: String] = [:]) async throws -> TroupeSettings {
        try await TroupeSettings.load(overrides: overrides, environment: environment, directory: "/", readingImplicitFile: false)
    }

    /// A run started where `troupe.yaml` gates `shell_run` keeps the gate when it is resumed
    /// from a directory whose settings say nothing.
    @Test func item1_theJournaledToolRulesReplaceTheCurrentOnes() async throws {
        let started = try await Self.settings([
            "tools.requireApproval=shell_run", "tools.deny=fs_write", "tools.shell.allowedPrograms=ls,git",
            "tools.web.allowedPrivateHosts=wiki.internal",
        ])
        let rules = ToolRules(started, toolGroups: ["fs", "shell"])
        let configuration = RunConfiguration(toolRules: rules.jsonValue)
        // Through the journal's JSON, as resume reads it.
        let reread = try JSONCoding.decode(RunConfiguration.self, from: JSONCoding.encode(configuration))
        let journaled = try #require(try ToolRules.journaled(in: reread))
        #expect(journaled == rules)

        let elsewhere = try await Self.settings([])
        let applied = try journaled.applied(to: elsewhere, toolGroups: ["fs", "shell"]).settings
        #expect(applied.toolPolicy.needsApproval("shell_run"))
        #expect(!applied.toolPolicy.permits("fs_write"))
        #expect(applied.shellPolicy.allowedExecutables == ["ls", "git"])
        #expect(applied.shellPolicy.refusedOptions == ShellPolicy.defaultRefusedOptions)
        #expect(applied.webPolicy.allowedPrivateHosts == ["wiki.internal"])
        #expect(applied.protectedPaths.patterns == started.protectedPaths.patterns)
    }

    @Test func item1_anMCPServerThatChangedOrWentAwayIsRefusedByName() async throws {
        let original = try await Self.settings([
            "mcp.servers.notes.command=python3", "mcp.servers.notes.args=notes.py", "mcp.servers.notes.env.TOKEN=one",
            "mcp.servers.other.url=http://127.0.0.1:9/mcp",
        ])
        let rules = ToolRules(original, toolGroups: ["fs", "mcp:notes"])
        // Only the servers the run's groups name are journaled.
        #expect(Array(rules.mcpServers.keys) == ["notes"])
        #expect(rules.mcpServers["notes"]?.hasPrefix("sha256:") == true)
        #expect(!rules.jsonValue.jsonString.contains("one"), "no variable value is journaled")

        // A rotated credential behind ${…} is the same server.
        let withVariable = try await Self.settings(
            ["mcp.servers.notes.command=python3", "mcp.servers.notes.args=notes.py", "mcp.servers.notes.env.TOKEN=${NOTES_TOKEN}"],
            environment: ["NOTES_TOKEN": "one"])
        let rotated = try await Self.settings(
            ["mcp.servers.notes.command=python3", "mcp.servers.notes.args=notes.py", "mcp.servers.notes.env.TOKEN=${NOTES_TOKEN}"],
            environment: ["NOTES_TOKEN": "two"])
        #expect(
            try ToolRules(withVariable, toolGroups: ["mcp:notes"]).applied(to: rotated, toolGroups: ["mcp:notes"]).settings.mcpServers.map(
                \.name)
                == ["notes"])

        // Another program under the same name is not.
        let changed = try await Self.settings([
            "mcp.servers.notes.command=python3", "mcp.servers.notes.args=evil.py", "mcp.servers.notes.env.TOKEN=one",
        ])
        let error = #expect(throws: TroupeError.self) { try rules.applied(to: changed, toolGroups: ["fs", "mcp:notes"]) }
        #expect(error?.code == .configuration)
        #expect(error?.message.contains("MCP server 'notes' is not defined as it was") == true)

        let gone = try await Self.settings([])
        let missing = #expect(throws: TroupeError.self) { try rules.applied(to: gone, toolGroups: ["mcp:notes"]) }
        #expect(missing?.message.contains("--use-current-tool-settings") == true)

        // `mcp` on resume means the servers the run had; a server named for the first time is
        // taken from the settings and journaled.
        let all = ToolRules(original, toolGroups: ["mcp"])
        let more = try await Self.settings([
            "mcp.servers.notes.command=python3", "mcp.servers.notes.args=notes.py", "mcp.servers.notes.env.TOKEN=one",
            "mcp.servers.other.url=http://127.0.0.1:9/mcp", "mcp.servers.third.url=http://127.0.0.1:9/x",
        ])
        #expect(try all.applied(to: more, toolGroups: ["mcp"]).settings.mcpServers.map(\.name) == ["notes", "other"])
        let adopted = try all.applied(to: more, toolGroups: ["mcp", "mcp:third"])
        #expect(adopted.settings.mcpServers.map(\.name) == ["notes", "other", "third"])
        #expect(adopted.rules.mcpServers.keys.sorted() == ["notes", "other", "third"])
    }

    /// A journal whose step may use `fs_read` and `fs_write`, created with `rules`, and (with
    /// `unfinishedWrite`) an `fs_write` in flight.
    private static func journal(
        at path: String, workspace: String, rules: ToolRules?, unfinishedWrite: Bool = false
    ) async throws -> RunID {
        let id = RunID.make()
        let configuration = RunConfiguration(model: "mock", workspace: workspace, tools: ["fs"], toolRules: rules?.jsonValue)
        let planKey = ActivityKey(step: "plan", attempt: 0, callIndex: 0)
        let thePlan = Plan(steps: [PlanStep(id: "s1", title: "Write", instruction: "Write a file", tools: ["fs_read", "fs_write"])])
        var events: [RunEvent] = [
            .leaseAcquired(owner: "gone/1/x"), .activityStarted(key: planKey, kind: .model(purpose: .plan)),
            .activityCompleted(key: planKey, result: .model(.plan(thePlan))), .planProposed(round: 0, plan: thePlan),
            .stepStarted(stepID: "s1", attempt: 1),
        ]
        if unfinishedWrite {
            let turnKey = ActivityKey(step: "s1", attempt: 1, callIndex: 0)
            let toolKey = ActivityKey(step: "s1", attempt: 1, callIndex: 1)
            events += [
                .activityStarted(key: turnKey, kind: .model(purpose: .execute)),
                .activityCompleted(key: turnKey, result: .model(.toolCall("fs_write", #"{"path":"a.txt","content":"x"}"#))),
                .activityStarted(key: toolKey, kind: .tool(name: "fs_write", callID: "call_0", effect: .idempotent)),
            ]
        }
        try await SQLiteRunStore.withStore(path: path) { store in
            _ = try await store.createRun(id: id, goal: "write", configuration: configuration, at: Date())
            _ = try await store.append(events, to: id, expectedSequence: 1, at: Date())
        }
        return id
    }

    /// End to end: `resume` from a directory without the run's settings offers the model what
    /// the journaled rules allow (no `fs_write`), not what the current (empty) settings would.
    @Test func item1_resumeFromAnotherDirectoryKeepsTheRunsToolRules() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let rules = ToolRules(try await Self.settings(["tools.deny=fs_write"]), toolGroups: ["fs"])
            let id = try await Self.journal(at: path, workspace: directory, rules: rules)
            try await MockOpenAIServer.withServer { mock in
                let resumed = try await CLIProcess.run(
                    ["resume", id.rawValue, "--base-url", mock.baseURL, "--store", "sqlite:\(path)"], directory: directory)
                #expect(resumed.status == 0, "output:\n\(resumed.output)")
                let offered = mock.requests.first?["tools"]?.arrayValue?.compactMap { $0["function"]?["name"]?.stringValue } ?? []
                #expect(offered == ["fs_read"])
                #expect(resumed.output.contains("differ from those run"), "the user is told the current rules are not applied")
            }
        }
    }

    @Test func item1_aWorkspaceChangeIsRefusedWhileAToolCallIsUnfinished() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            try FileManager.default.createDirectory(atPath: directory + "/other", withIntermediateDirectories: true)
            let id = try await Self.journal(at: path, workspace: directory, rules: nil, unfinishedWrite: true)
            let moved = try await CLIProcess.run(
                [
                    "resume", id.rawValue, "--workspace", directory + "/other", "--base-url", "http://127.0.0.1:9/v1", "--store",
                    "sqlite:\(path)",
                ],
                directory: directory)
            #expect(moved.status == 6, "output:\n\(moved.output)")
            #expect(moved.output.contains("unfinished tool call"))
            #expect(!FileManager.default.fileExists(atPath: directory + "/other/a.txt"))
        }
    }

    // MARK: 7. resume --json prints the run document

    @Test func item7_resumeJSONPrintsTheDocumentOfAFinishedOrParkedRun() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let id = try await Self.journal(at: path, workspace: directory, rules: nil, unfinishedWrite: true)
            let store = "sqlite:\(path)"
            let cancel = try await CLIProcess.run(["cancel", id.rawValue, "--store", store], directory: directory)
            #expect(cancel.status == 0)
            let finished = try await CLIProcess.runApart(["resume", id.rawValue, "--json", "--store", store], directory: directory)
            #expect(finished.status == 3)
            let document = try JSONValue.parse(finished.output)
            #expect(document["id"]?.stringValue == id.rawValue)
            #expect(document["status"] == "cancelled")
            #expect(finished.errors.contains("already cancelled"))
        }
    }

    @Test func item7_resumeJSONOfARunThatNeedsAttentionPrintsItsDocument() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let id = try await Self.journal(at: path, workspace: directory, rules: nil)
            try await SQLiteRunStore.withStore(path: path) { store in
                let key = ActivityKey(step: "s1", attempt: 1, callIndex: 0)
                _ = try await store.append(
                    [
                        .activityStarted(key: key, kind: .tool(name: "fs_append", callID: "c", effect: .sideEffecting)),
                        .runNeedsAttention(key: key, reason: "fs_append was in flight"),
                    ],
                    to: id, expectedSequence: 6, at: Date())
            }
            let parked = try await CLIProcess.runApart(
                ["resume", id.rawValue, "--json", "--store", "sqlite:\(path)"], directory: directory)
            #expect(parked.status == 2, "stderr:\n\(parked.errors)")
            #expect(try JSONValue.parse(parked.output)["status"] == "needsAttention")
            #expect(parked.errors.contains("needs attention"))
        }
    }

    // MARK: 2. The store is its owner's only; $HOME is honoured

    private static func mode(_ path: String) -> mode_t {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & 0o777 : 0
    }

    @Test func item2_aNewStoreIsReadableByItsOwnerOnly() async throws {
        try await withTemporaryDirectory { directory in
            let previous = umask(0o022)
            defer { umask(previous) }
            let path = directory + "/a/b/runs.db"
            try await SQLiteRunStore.withStore(path: path) { store in
                _ = try await store.createRun(id: .make(), goal: "secret goal", configuration: RunConfiguration(), at: Date())
                #expect(Self.mode(path + "-wal") == 0o600)
                #expect(Self.mode(path + "-shm") == 0o600)
            }
            #expect(Self.mode(directory + "/a") == 0o700)
            #expect(Self.mode(directory + "/a/b") == 0o700)
            #expect(Self.mode(path) == 0o600)
        }
    }

    /// `HOME` decides where the default store is (CLIProcess sets it to the test's folder), and
    /// a store an older Troupe left readable by others is tightened.
    @Test func item2_theDefaultStoreFollowsHOMEAndIsTightened() async throws {
        try await withTemporaryDirectory { directory in
            let home = directory + "/home"
            try FileManager.default.createDirectory(atPath: home + "/.troupe", withIntermediateDirectories: true)
            chmod(home + "/.troupe", 0o755)
            let listed = try await CLIProcess.run(["runs"], directory: directory, environment: ["HOME": home])
            #expect(listed.status == 0, "output:\n\(listed.output)")
            #expect(FileManager.default.fileExists(atPath: home + "/.troupe/troupe.db"))
            #expect(Self.mode(home + "/.troupe") == 0o700)
            #expect(Self.mode(home + "/.troupe/troupe.db") == 0o600)
            chmod(home + "/.troupe/troupe.db", 0o644)
            _ = try await CLIProcess.run(["runs"], directory: directory, environment: ["HOME": home])
            #expect(Self.mode(home + "/.troupe/troupe.db") == 0o600)
        }
    }

    // MARK: 9. Settings

    /// `mcp.servers.*` and `tools.limits.*` are "file or --set only": an inherited variable
    /// cannot swap the program an MCP server runs, or lift a limit.
    @Test func item9_fileOnlyKeysIgnoreTheEnvironment() async throws {
        try await withTemporaryDirectory { directory in
            let yaml = """
                mcp:
                  servers:
                    notes: {command: python3, args: [notes.py]}
                tools:
                  limits:
                    shell_run: {maxCallsPerRun: 2}
                """
            try yaml.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
            let settings = try await TroupeSettings.load(
                environment: [
                    "TROUPE_MCP_SERVERS_NOTES_COMMAND": "/bin/evil", "TROUPE_TOOLS_LIMITS_SHELL_RUN_MAX_CALLS_PER_RUN": "1000",
                    // Shells set `_` to the last command: a key mapped to a blank name once read it.
                    "_": "/usr/bin/timeout",
                ], directory: directory)
            guard case .stdio(let command, _, _, _) = try #require(settings.mcpServers.first).transport else {
                Issue.record("not a stdio server")
                return
            }
            #expect(command == "python3")
            #expect(
                settings.mcpServers.first.map { server in
                    if case .stdio(_, let arguments, _, _) = server.transport { arguments == ["notes.py"] } else { false }
                } == true)
            #expect(settings.toolPolicy.limits(for: "shell_run").maxCallsPerRun == 2)
        }
    }

    @Test func item9_anEndpointWithOnlyItsKeyVariableUsesThatKey() async throws {
        let settings = try await TroupeSettings.load(
            overrides: ["model.fallbacks=backup", "endpoints.backup.apiKeyEnv=BACKUP_KEY"], environment: ["BACKUP_KEY": "sk-backup"],
            directory: "/", readingImplicitFile: false)
        let fallback = try #require(settings.fallbacks.first)
        #expect(fallback.model == "backup")
        #expect(fallback.apiKey == "sk-backup")
        #expect(fallback.hasOwnKey)
    }

    @Test func item9_aRelativeStoreInTheFileIsRelativeToTheFile() async throws {
        try await withTemporaryDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory + "/conf", withIntermediateDirectories: true)
            try "store: sqlite:data/runs.db\n".write(toFile: directory + "/conf/troupe.yaml", atomically: true, encoding: .utf8)
            let settings = try await TroupeSettings.load(file: directory + "/conf/troupe.yaml", environment: [:], directory: "/")
            let expected = "sqlite:" + URL(fileURLWithPath: directory + "/conf/data/runs.db").standardizedFileURL.path
            #expect(settings.store == expected)
            // From the environment it is the process's business (relative to where it runs).
            let fromVariable = try await TroupeSettings.load(
                file: directory + "/conf/troupe.yaml", environment: ["TROUPE_STORE": "sqlite:x.db"], directory: "/")
            #expect(fromVariable.store == "sqlite:x.db")
        }
    }

    // MARK: 4. The mock server

    @Test func item4_theMockTakesAnyBoundAndRefusesOversizedBodies() async throws {
        try await MockOpenAIServer.withServer { mock in
            let client = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m"))
            var request = ChatRequest(messages: [.user("count")])
            request.tools = [
                ToolSpec(name: "count", description: "Counts.", parameters: .object([.init("n", .integer(minimum: nil))]))
            ]
            request.tools[0].parameters.properties[0].schema.minimum = 1e300
            let response = try await client.complete(request)
            #expect(response.message.toolCalls.first?.arguments == #"{"n":1}"#)

            let huge = ChatRequest(messages: [.user(String(repeating: "x", count: MockOpenAIServer.maxRequestBytes + 1))])
            do {
                _ = try await client.complete(huge)
                Issue.record("an oversized body was read")
            } catch let error as TroupeError {
                #expect(error.details["status"] == "413", "\(error)")
            }
        }
    }

    @Test func item4_aMockServerThatCannotListenExitsWithTheConfigurationCode() async throws {
        try await MockOpenAIServer.withServer { taken in
            try await withTemporaryDirectory { directory in
                let result = try await CLIProcess.run(["mock-server", "--port", "\(taken.port)"], directory: directory)
                #expect(result.status == 6, "output:\n\(result.output)")
                #expect(result.output.contains("Cannot listen on 127.0.0.1:\(taken.port)"))
            }
        }
    }

    // MARK: 5. Streamable HTTP: the answer's body is bounded in time, and left once answered

    /// An MCP server over streamable HTTP whose `tools/call` answers in an event stream that it
    /// then keeps open (`answers: false`: never answers at all).
    private final class LingeringMCPServer: Sendable {
        let port: Int
        /// Event streams open now.
        let openStreams = Mutex(0)

        private init(port: Int) { self.port = port }

        static func withServer<T>(answers: Bool, _ body: (LingeringMCPServer) async throws -> T) async throws -> T {
            let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(host: "127.0.0.1", port: 0) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                    }
                }
            let mcp = LingeringMCPServer(port: server.channel.localAddress?.port ?? 0)
            let task = Task<Void, Never> {
                try? await withThrowingDiscardingTaskGroup { group in
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await Self.serve(connection, answers: answers, streams: mcp) }
                        }
                    }
                }
            }
            do {
                let result = try await body(mcp)
                try? await server.channel.close()
                task.cancel()
                await task.value
                return result
            } catch {
                try? await server.channel.close()
                task.cancel()
                await task.value
                throw error
            }
        }

        private static func serve(
            _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, answers: Bool, streams server: LingeringMCPServer
        ) async {
            try? await connection.executeThenClose { inbound, outbound in
                var body = ByteBuffer()
                var parts = inbound.makeAsyncIterator()
                while let part = try await parts.next() {
                    switch part {
                    case .head: body.clear()
                    case .body(var chunk): body.writeBuffer(&chunk)
                    case .end:
                        let message = (try? JSONValue.parse(Data(body.readableBytesView))) ?? .null
                        let id = message["id"] ?? .null
                        let reply: JSONValue
                        switch message["method"]?.stringValue {
                        case "initialize":
                            reply = [
                                "jsonrpc": "2.0", "id": id,
                                "result": [
                                    "protocolVersion": "2025-03-26", "capabilities": ["tools": [:]],
                                    "serverInfo": ["name": "lingering", "version": "1"],
                                ],
                            ]
                        case "tools/list":
                            reply = [
                                "jsonrpc": "2.0", "id": id,
                                "result": [
                                    "tools": [["name": "hang", "description": "Answers, then lingers.", "inputSchema": ["type": "object"]]]
                                ],
                            ]
                        case "tools/call":
                            var headers = HTTPHeaders()
                            headers.add(name: "content-type", value: "text/event-stream")
                            try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
                            if answers {
                                let answer: JSONValue = [
                                    "jsonrpc": "2.0", "id": id, "result": ["content": [["type": "text", "text": "done"]]],
                                ]
                                try await outbound.write(
                                    .body(.byteBuffer(ByteBuffer(string: "event: message\ndata: \(answer.jsonString)\n\n"))))
                            }
                            server.openStreams.withLock { $0 += 1 }
                            defer { server.openStreams.withLock { $0 -= 1 } }
                            // Open until the client closes the connection.
                            while try await parts.next() != nil {}
                            return
                        default:
                            try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .accepted)))
                            try await outbound.write(.end(nil))
                            continue
                        }
                        var headers = HTTPHeaders()
                        headers.add(name: "content-type", value: "application/json")
                        let buffer = ByteBuffer(string: reply.jsonString)
                        headers.add(name: "content-length", value: "\(buffer.readableBytes)")
                        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
                        try await outbound.write(.body(.byteBuffer(buffer)))
                        try await outbound.write(.end(nil))
                    }
                }
            }
        }
    }

    /// A server that answers in an event stream and keeps it open: the call returns with the
    /// answer, and the stream's connection is closed at once instead of lingering for the
    /// exchange's whole time limit.
    @Test func item5_anEventStreamIsLeftOnceTheAnswerArrived() async throws {
        try await LingeringMCPServer.withServer(answers: true) { server in
            let configuration = MCPServerConfiguration(
                name: "lingering", transport: .http(url: "http://127.0.0.1:\(server.port)/mcp", headers: [:]), callTimeout: .seconds(60))
            let servers = try MCPServers([configuration], logger: MCPFixtures.logger)
            let tool = try #require(try await servers.tools().first)
            let output = await MCPFixtures.call(tool, [:])
            #expect(output == ToolOutput("done"))
            let deadline = ContinuousClock.now + .seconds(10)
            while server.openStreams.withLock({ $0 }) > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(server.openStreams.withLock { $0 } == 0, "the event stream was left open")
            await servers.shutdown()
        }
    }

    /// A server that starts an event stream and never answers: the exchange ends at its time
    /// limit with a clear error, not when the server decides to close.
    @Test func item5_anAnswerThatNeverComesEndsAtTheLimit() async throws {
        try await LingeringMCPServer.withServer(answers: false) { server in
            let transport = StreamableHTTPTransport(
                serverName: "lingering", url: "http://127.0.0.1:\(server.port)/mcp", headers: [:],
                httpClient: OpenAIChatModel.sharedHTTPClient, requestTimeout: .seconds(3),
                logger: MCPFixtures.logger)
            let call: JSONValue = ["jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": ["name": "hang", "arguments": [:]]]
            let error = await #expect(throws: TroupeError.self) { try await transport.send(Data(call.jsonString.utf8)) }
            #expect(error?.message.contains("did not finish its answer within") == true, "\(String(describing: error))")
        }
    }

    // MARK: 9. The demo cleans up after itself

    @Test func item9_theDemoLeavesNoFolderAndNoRunInTheUsersStore() async throws {
        try await withTemporaryDirectory { directory in
            let temporary = directory + "/tmp"
            try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
            let environment = ["HOME": directory + "/home", "TMPDIR": temporary]
            let demo = try await CLIProcess.run(["demo"], directory: directory, environment: environment)
            #expect(demo.status == 0, "output:\n\(demo.output)")
            #expect(demo.output.contains("# Open tasks"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: temporary).isEmpty, "the demo's folder is removed")
            #expect(!FileManager.default.fileExists(atPath: directory + "/home/.troupe/troupe.db"), "no run in the user's store")

            let kept = try await CLIProcess.run(["demo", "--keep"], directory: directory, environment: environment)
            #expect(kept.status == 0)
            let folders = try FileManager.default.contentsOfDirectory(atPath: temporary)
            #expect(folders.count == 1 && folders[0].hasPrefix("troupe-demo-"))
            #expect(FileManager.default.fileExists(atPath: temporary + "/" + folders[0] + "/runs.db"))
            #expect(kept.output.contains("troupe show"))
        }
    }

    // MARK: 9. MCP tool names and schemas

    @Test func item9_toolNamesDoNotDependOnListingOrder() {
        let tools = [("fx", "a.b"), ("fx", "a_b"), ("a_b", "c"), ("a", "b_c")]
        let forward = MCPToolName.assign(tools.map { (server: $0.0, tool: $0.1) })
        let backward = MCPToolName.assign(tools.reversed().map { (server: $0.0, tool: $0.1) })
        #expect(forward == Array(backward.reversed()))
        #expect(forward[1] == "mcp_fx_a_b", "the exact name wins over the cleaned one")
        #expect(forward[0].hasPrefix("mcp_fx_a_b_"))
        #expect(Set(forward).count == 4)
    }

    @Test func item9_oddSchemasAndDescriptionsAreHandled() {
        #expect(MCPTool.problem(with: MCPRemoteTool(name: "t", description: "", inputSchema: ["type": "string"])) != nil)
        #expect(MCPTool.problem(with: MCPRemoteTool(name: "t", description: "", inputSchema: .array([]))) != nil)
        #expect(MCPTool.problem(with: MCPRemoteTool(name: "t", description: "", inputSchema: ["type": ["object", "null"]])) == nil)
        #expect(MCPTool.problem(with: MCPRemoteTool(name: "t", description: "", inputSchema: [:])) == nil)
        let huge: JSONValue = ["type": "object", "description": .string(String(repeating: "x", count: 40_000))]
        #expect(MCPTool.problem(with: MCPRemoteTool(name: "t", description: "", inputSchema: huge))?.contains("KiB") == true)
        #expect(MCPTool.oneLine("  one\r\ntwo\u{2028}\tthree\u{1B}[31m ") == "one two three [31m")
    }

    @Test func item9_moreToolsThanAModelTakesAreRefusedWithHowToNarrowThem() throws {
        struct Named: Tool {
            let name: String
            let description = "A tool."
            let effect = ToolEffect.readOnly
            let parameters = JSONSchema.object([])
            func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput { ToolOutput("") }
        }
        let many = (0..<200).map { Named(name: "mcp_big_t\($0)") }
        let error = #expect(throws: TroupeError.self) { try ToolRegistry(many).checkedForModels() }
        #expect(error?.code == .configuration && error?.message.contains("tools.allow") == true)
        let narrowed = try ToolRegistry(many, policy: ToolPolicy(allow: ["mcp_big_t1*"])).checkedForModels()
        #expect(narrowed.availableNames.count == 111)
    }

    // MARK: 9. What reaches the terminal

    /// A file (or page, or server) with escape sequences: `run` and `show` print its text without
    /// them — no title change, no colour, no clipboard write (OSC 52).
    @Test func item9_escapeSequencesInToolOutputNeverReachTheTerminal() async throws {
        // Ends with an OSC cut off (as a clipped result is): it may not hide the next lines.
        let hostile =
            "before\u{1B}]0;pwned\u{07}\u{1B}]52;c;ZXZpbA==\u{1B}\\\u{1B}[31mred\u{1B}[0m\r\u{9B}2Jafter\n\u{1B}]8;;http://x\nLATER\n"
        let configuration = MockOpenAIServer.Configuration(
            planSteps: 1, planTools: ["fs_read"], arguments: { tool, _ in tool == "fs_read" ? ["path": "evil.txt"] : nil })
        try await MockOpenAIServer.withServer(configuration: configuration) { mock in
            try await withTemporaryDirectory { directory in
                try hostile.write(toFile: directory + "/evil.txt", atomically: true, encoding: .utf8)
                let store = "sqlite:\(directory)/runs.db"
                let run = try await CLIProcess.run(
                    ["run", "Read evil.txt", "--tools", "fs", "--base-url", mock.baseURL, "--store", store, "--workspace", directory],
                    directory: directory)
                #expect(run.status == 0, "output:\n\(run.output)")
                let id = try #require(run.output.split(separator: " ").first { $0.hasPrefix("run_") }.map(String.init))
                let show = try await CLIProcess.run(["show", id, "--store", store], directory: directory)
                for output in [run.output, show.output] {
                    #expect(!output.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x9B || $0.value == 0x07 })
                    #expect(!output.contains("pwned") && !output.contains("ZXZpbA=="))
                }
                #expect(show.output.contains("beforeredafter"))
                #expect(show.output.contains("LATER"), "an unterminated sequence ends at the line's end")
            }
        }
    }

    /// What an MCP server writes to stderr reaches the terminal in error and log lines: without
    /// escape sequences (an OSC 52 clipboard write here).
    @Test func item9_aServersStderrReachesTheTerminalClean() async throws {
        try await withTemporaryDirectory { directory in
            let yaml = """
                mcp:
                  servers:
                    loud:
                      command: /bin/sh
                      args:
                        - -c
                        - |
                          printf '\\033]52;c;ZXZpbA==\\a\\033[2J boom\\n' >&2; exit 3
                """
            try yaml.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
            let result = try await CLIProcess.run(
                [
                    "run", "x", "--tools", "mcp:loud", "--base-url", "http://127.0.0.1:9/v1", "--store", "sqlite:\(directory)/runs.db",
                    "--config", "troupe.yaml", "--verbose",
                ],
                directory: directory)
            #expect(result.status == 6, "output:\n\(result.output)")
            #expect(result.output.contains("boom"), "\(result.output)")
            #expect(!result.output.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 })
            #expect(!result.output.contains("ZXZpbA=="))
        }
    }

    @Test func item1_reviewedEdgesOfTheJournaledRules() async throws {
        // A server named twice is one server (it crashed the process once).
        let settings = try await Self.settings(["mcp.servers.a.url=http://127.0.0.1:9/mcp"])
        #expect(ToolRules(settings, toolGroups: ["mcp:a", "mcp:a"]).mcpServers.keys.sorted() == ["a"])

        // `resume --tools mcp` on a run that had no MCP server takes the configured ones.
        let none = ToolRules(settings, toolGroups: ["fs"])
        let added = try none.applied(to: settings, toolGroups: ["fs", "mcp"])
        #expect(added.settings.mcpServers.map(\.name) == ["a"] && added.rules.mcpServers.keys.sorted() == ["a"])

        // This build's protections are added to what was journaled.
        var bare = none
        bare.protectedPaths = ["secrets"]
        bare.shell.refusedOptions = [:]
        let applied = try bare.applied(to: settings, toolGroups: ["fs"]).settings
        #expect(applied.protectedPaths.patterns.contains("**/.git") && applied.protectedPaths.patterns.contains("secrets"))
        #expect(applied.shellPolicy.refusedOptions["find"]?.words.contains("-exec") == true)

        // Variables and headers count as written: a rotated token behind ${…} is the same server,
        // a changed literal value is not.
        let one = try await TroupeSettings.load(
            overrides: ["mcp.servers.s.command=srv", "mcp.servers.s.env.TOKEN=${T}", "mcp.servers.s.env.ROOT=/data"],
            environment: ["T": "one"], directory: "/", readingImplicitFile: false)
        let two = try await TroupeSettings.load(
            overrides: ["mcp.servers.s.command=srv", "mcp.servers.s.env.TOKEN=${T}", "mcp.servers.s.env.ROOT=/data"],
            environment: ["T": "two"], directory: "/", readingImplicitFile: false)
        let widened = try await TroupeSettings.load(
            overrides: ["mcp.servers.s.command=srv", "mcp.servers.s.env.TOKEN=${T}", "mcp.servers.s.env.ROOT=/"],
            environment: ["T": "one"], directory: "/", readingImplicitFile: false)
        let rules = ToolRules(one, toolGroups: ["mcp:s"])
        #expect(rules.mcpServers == ToolRules(two, toolGroups: ["mcp:s"]).mcpServers)
        #expect(rules.mcpServers != ToolRules(widened, toolGroups: ["mcp:s"]).mcpServers)
    }

    @Test func item9_hashedNamesNeverCollide() {
        let hashed = MCPToolName.make(server: "fx", tool: "a.b", taken: ["mcp_fx_a_b"])
        let literal = String(hashed.dropFirst("mcp_fx_".count))
        let names = MCPToolName.assign([("fx", "a.b"), ("fx", "a_b"), ("fx", literal)].map { (server: $0.0, tool: $0.1) })
        #expect(Set(names).count == 3, "\(names)")
    }
}
