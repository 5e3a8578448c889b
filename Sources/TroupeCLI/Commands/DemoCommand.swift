import ArgumentParser
import Foundation
import Troupe
import TroupeSettings
import TroupeTesting

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a real plan-and-execute run offline, against a local deterministic mock model.",
        discussion: """
            Starts MockOpenAIServer on 127.0.0.1 (it speaks the OpenAI wire format), creates a temporary \
            workspace with a few files, and runs a goal through the real HTTP client, the real file tools and the \
            real SQLite journal. Nothing leaves the machine and no API key is needed.
            """
    )

    @Flag(name: .long, help: "Stream the mock model's answers over SSE.")
    var stream = false

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Use this directory as the workspace instead of a new temporary one.", valueName: "dir"))
    var workspace: String?

    @Flag(
        name: .long,
        help: "Keep the temporary workspace and journal (by default they are removed when the demo ends).")
    var keep = false

    @OptionGroup var global: GlobalOptions

    static let goal =
        "Read the notes in this workspace and write a short summary of the open tasks to SUMMARY.md."

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            // A folder of its own for what the demo makes: the workspace (unless --workspace) and
            // the journal (unless --store), so the user's real store gets no demo runs.
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("troupe-demo-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            let removeScratch: @Sendable () -> Void = { [keep] in
                if !keep { try? FileManager.default.removeItem(atPath: scratch) }
            }
            Signals.cleanUpOnInterrupt(removeScratch)
            Signals.exitStoppingChildren()
            do {
                try await demo(scratch: scratch)
                removeScratch()
            } catch {
                removeScratch()
                throw error
            }
        }
    }

    private func demo(scratch: String) async throws {
        let root =
            try workspace.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
            ?? Self.makeWorkspace(in: scratch + "/workspace")
        var options = global
        if options.store == nil { options.store = "sqlite:" + scratch + "/runs.db" }
        try await options.withRuntime { runtime in
            let mock = try await MockOpenAIServer.start(
                configuration: MockOpenAIServer.Configuration(
                    planSteps: 3,
                    latency: .milliseconds(150),
                    planTools: ["fs_list", "fs_read", "fs_write"],
                    arguments: Self.arguments
                )
            )
            say(
                """
                Troupe demo — offline. The model is a local deterministic mock (MockOpenAIServer at \(mock.baseURL)),
                reached over real HTTP by the same OpenAIChatModel that talks to OpenAI; the file tools and the SQLite
                journal are the real ones.
                To use a real model: export OPENAI_API_KEY=sk-… (and OPENAI_BASE_URL for another server), then
                  troupe run "\(Self.goal)" --workspace DIR

                """
            )
            var configuration = RunConfiguration(
                model: "troupe-mock", baseURL: mock.baseURL, workspace: root, tools: ["fs"])
            configuration.stream = stream
            configuration.toolRules = ToolRules(runtime.settings, toolGroups: configuration.tools).jsonValue
            let outcome: Result<RunStateMachine, any Error>
            do {
                let model = try runtime.model(for: configuration)
                let tools = try await runtime.tools(for: configuration)
                let id = RunID.make()
                // A run whose journal is removed at the end is not worth a resume hint.
                if keep || global.store != nil { Signals.exitWithResumeHint(runID: id.rawValue, storeHint: runtime.opened.flag) }
                say("▸ run \(id) — \(Self.goal)\n  workspace \(root)")
                let driver = runtime.driver(
                    model: model, tools: tools, observer: ProgressPrinter(enabled: true).observer)
                outcome = .success(
                    try await driver.run(goal: Self.goal, configuration: configuration, id: id))
            } catch {
                outcome = .failure(error)
            }
            if case .success(let final) = outcome { Signals.exitAfterRun(final.status) }
            await mock.shutdown()
            let final = try outcome.get()
            if let summary = try? String(contentsOfFile: root + "/SUMMARY.md", encoding: .utf8) {
                say("\nThe run wrote \(root)/SUMMARY.md:\n\(summary)")
            }
            say("The mock answered \(mock.requestCount) model requests.")
            if keep {
                try await finish(final, store: runtime.opened, json: false)
                say("(From a source checkout, `swift run troupe show …` runs the same command.)")
            } else if global.store != nil {
                try await finish(final, store: runtime.opened, json: false)
                say("The demo's temporary workspace is removed now (the run stays in the store); pass --keep to keep it.")
            } else {
                say("The demo's workspace and journal are removed now; pass --keep to keep them and inspect the run with `troupe show`.")
                let code = ExitStatus.forRun(final.status)
                if code != 0 { throw ExitCode(code) }
            }
        }
    }

    /// The mock's tool arguments: list the notes, read one, write the summary.
    @Sendable static func arguments(tool: String, schema: JSONValue) -> JSONValue? {
        switch tool {
        case "fs_list": ["path": "notes"]
        case "fs_read": ["path": "notes/todo.md"]
        case "fs_write":
            [
                "path": "SUMMARY.md",
                "content":
                    "# Open tasks\n\n- Ship the durable journal\n- Write the runbook\n\n(written by the Troupe demo)\n",
            ]
        default: nil
        }
    }

    static func makeWorkspace(in path: String) throws -> String {
        let root = URL(fileURLWithPath: path)
        let files = [
            "README.md": "# Demo project\n\nNotes live in notes/.\n",
            "notes/todo.md":
                "# TODO\n\n- [ ] Ship the durable journal\n- [ ] Write the runbook\n- [x] Pick a name\n",
            "notes/ideas.md": "# Ideas\n\n- A web console for runs\n",
        ]
        for (path, content) in files {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try content.write(to: url, atomically: true, encoding: .utf8)
        }
        return root.path
    }
}
