import ArgumentParser
import CTroupeSystem
import Logging
import Troupe

@main
struct TroupeCommand: AsyncParsableCommand {
    /// Before anything reads a secret: programs that tools start run as this user, and must not
    /// read this process's environment (`/proc/PID/environ`) or memory.
    static func main() async {
        _ = troupe_disable_dumping()
        // Log lines quote what servers and models sent (an MCP server's stderr, say): they reach
        // the terminal through the same filter as everything else.
        // JSON lines (`--log-format json`, the default of `serve` and `worker`) are redacted by
        // their handler and escaped by JSON.
        LoggingSystem.bootstrap { label in
            LogOutput.handler(label: label) { label in
                RewritingLogHandler(
                    base: StreamLogHandler.standardError(label: label), rewrite: { TerminalText.safe(Redactor.shared.redact($0)) })
            }
        }
        await Self.main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "troupe",
        abstract: "Plan-and-execute LLM agents that do not lose work.",
        discussion: """
            A planner turns a goal into steps; an executor carries out each step with tools; every model and \
            tool call is journaled, so a run resumes after a crash without repeating side effects.

            Try it offline:   troupe demo
            With a model:     OPENAI_API_KEY=… troupe run "Summarize the notes in ./docs" --workspace .

            Exit codes: 0 succeeded · 1 run failed · 2 run needs attention · 3 run cancelled · \
            4 another process holds the run · 5 not found · 6 invalid input or configuration · \
            7 storage error · 64 bad command line · 70 internal error · 130 interrupted (resumable).
            """,
        subcommands: [
            DemoCommand.self, RunCommand.self, ResumeCommand.self, RunsCommand.self, ShowCommand.self,
            SubmitCommand.self, CancelCommand.self, ApproveCommand.self, ApprovalsCommand.self, WorkerCommand.self, ServeCommand.self,
            KeysCommand.self, UsageCommand.self, MigrateCommand.self,
            MockServerCommand.self,
        ]
    )
}
