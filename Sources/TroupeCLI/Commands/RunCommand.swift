import ArgumentParser
import Foundation
import Troupe

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Plan and carry out a goal, journaling every step.",
        discussion: """
            The model is reached through the OpenAI-compatible API: set OPENAI_API_KEY (and OPENAI_BASE_URL or \
            --base-url for another server such as vLLM, Ollama or LiteLLM). The run is stored in --store; if the \
            process dies, `troupe resume RUN_ID` continues it without repeating finished work.

            Example: troupe run "List the TODOs in notes/ and write them to TODO.md" --workspace ./project
            """
    )

    @Argument(help: "What the run should achieve.")
    var goal: String

    @OptionGroup var options: RunOptions
    @OptionGroup var global: GlobalOptions

    @Flag(
        name: .long,
        help: "Print the finished run as one JSON document (as `show --json`) instead of progress.")
    var json = false

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            try await global.withRuntime(workspace: { try options.newRunConfiguration($0).workspace }) { runtime in
                let configuration = try options.newRunConfiguration(runtime.settings)
                let model = try runtime.model(for: configuration)
                var tools = try await runtime.tools(for: configuration)
                // A person at the terminal decides calls that need approval as they come.
                if !json && TerminalApprover.isAvailable { tools.approver = TerminalApprover() }
                let id = RunID.make()
                Signals.exitWithResumeHint(runID: id.rawValue, storeHint: runtime.opened.flag)
                let printer = ProgressPrinter(enabled: !json)
                if !json {
                    say("▸ run \(id) — \(goal)")
                    let endpoint = runtime.settings.endpoint(for: configuration)
                    say("  model \(configuration.model) at \(endpoint.baseURL) · workspace \(configuration.workspace)")
                    if let shell = tools.tool(named: "shell_run") as? ShellTool { say("  shell_run: \(shell.policy.sandboxDescription)") }
                }
                let final = try await runtime.driver(model: model, tools: tools, observer: printer.observer)
                    .run(goal: goal, configuration: configuration, id: id)
                Signals.exitAfterRun(final.status)
                try await finish(final, store: runtime.opened, json: json)
            }
        }
    }
}
