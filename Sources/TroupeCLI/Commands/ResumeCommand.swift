import ArgumentParser
import Foundation
import Troupe
import TroupeSettings

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract:
            "Continue a run that stopped: a crash, a kill, a lost machine, or a run that needs attention.",
        discussion: """
            The run continues with the configuration recorded when it was created (model, base URL, workspace, \
            tools, limits); flags given here override it and the change is journaled. Finished model and tool \
            calls are replayed from the journal, not repeated. If another live process is driving the run, \
            resume refuses; if that process died, resume takes the run over (at once when it ran on this machine \
            and in this PID namespace, otherwise once its lease expires, 30 s at most).

            A run parked in needsAttention had a side-effecting tool call in flight when its process died. \
            Check whether it took effect, then resume with --retry (run it again) or --skip (do not; the model \
            is told the outcome is unknown). The decision applies to that call only: if another call was in \
            flight too, the run parks again and names it.
            """
    )

    @Argument(help: "The run to resume.")
    var runID: String

    @OptionGroup var options: RunOptions
    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Run the in-flight side-effecting call of a needsAttention run again.")
    var retry = false

    @Flag(name: .long, help: "Skip the in-flight side-effecting call of a needsAttention run.")
    var skip = false

    @Flag(name: .long, help: "Print the finished run as one JSON document instead of progress.")
    var json = false

    func validate() throws {
        if retry && skip { throw ValidationError("Choose one of --retry and --skip.") }
    }

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            let id = RunID(runID)
            let workspace: (TroupeSettings) async throws -> String = { [global, options] settings in
                let recorded = try await global.withStore(settings: settings) { try await $0.run(id)?.configuration }
                return try options.applied(to: recorded ?? RunConfiguration()).workspace
            }
            try await global.withRuntime(workspace: workspace) { runtime in
                let store = runtime.store
                let summary = try await store.requireRun(id)
                if summary.status.isTerminal {
                    say("Run \(id) already \(summary.status.rawValue); nothing to resume.")
                    throw ExitCode(ExitStatus.forRun(summary.status))
                }
                if summary.status == .needsAttention && !retry && !skip {
                    say("Run \(id) needs attention: \(summary.error?.message ?? "")")
                    throw ExitCode(ExitStatus.needsAttention)
                }
                let configuration = try options.applied(to: summary.configuration)
                let model = try runtime.model(for: configuration)
                let tools = try await runtime.tools(for: configuration)
                let printer = ProgressPrinter(enabled: !json)
                let driver = runtime.driver(model: model, tools: tools, observer: printer.observer)
                Signals.exitWithResumeHint(runID: id.rawValue, storeHint: storeFlag(store))
                let resolution: AttentionResolution? = retry ? .retry : skip ? .skip : nil
                // The call the operator decides on is the one the run is parked on now; if another
                // process changes that before this one takes the run, the decision is refused.
                var parkedOn: ActivityKey?
                if resolution != nil && summary.status == .needsAttention {
                    parkedOn = try RunStateMachine(runID: id, replaying: try await store.events(of: id)).attentionKey
                }
                if resolution != nil && summary.status != .needsAttention {
                    say(
                        "▸ run \(id) is not waiting for a decision: --retry/--skip apply only to the call a parked run "
                            + "names, and are not used; if this run parks on a call, you will be shown which")
                }
                let takeover = LeaseTakeover(
                    store: store, runID: id,
                    report: { message in
                        if !json { say("▸ \(message)") }
                    })
                let final = try await takeover.drive { replacing in
                    try await driver.drive(
                        id, replacing: replacing, resolution: resolution, attentionKey: parkedOn, configuration: configuration)
                }
                try await finish(final, store: store, json: json)
            }
        }
    }
}
