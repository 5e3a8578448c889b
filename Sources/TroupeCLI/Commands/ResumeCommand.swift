import ArgumentParser
import Foundation
import Troupe
import TroupeAPI
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
    @OptionGroup var remote: ServerOption

    @Flag(name: .long, help: "Run the in-flight side-effecting call of a needsAttention run again.")
    var retry = false

    @Flag(name: .long, help: "Skip the in-flight side-effecting call of a needsAttention run.")
    var skip = false

    @Flag(name: .long, help: "Print the finished run as one JSON document instead of progress.")
    var json = false

    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Apply the current settings' tool rules and MCP servers instead of those journaled when the run started "
                + "(the change is journaled)."))
    var useCurrentToolSettings = false

    func validate() throws {
        if retry && skip { throw ValidationError("Choose one of --retry and --skip.") }
    }

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            if let server = try remote.remote() {
                try await resume(through: server)
                return
            }
            let id = RunID(runID)
            let workspace: (TroupeSettings) async throws -> String = { [global, options] settings in
                let recorded = try await global.withStore(settings: settings) { try await $0.store.run(id)?.configuration }
                return try options.applied(to: recorded ?? RunConfiguration()).workspace
            }
            try await global.withRuntime(workspace: workspace) { runtime in
                let store = runtime.store
                let summary = try await store.requireRun(id)
                if summary.status.isTerminal {
                    note("Run \(id) already \(summary.status.rawValue); nothing to resume.", json: json)
                    try await printDocument(of: id, store: store, prices: runtime.settings.prices, json: json)
                    throw ExitCode(ExitStatus.forRun(summary.status))
                }
                if summary.status == .needsAttention && !retry && !skip {
                    note("Run \(id) needs attention: \(summary.error?.message ?? "")", json: json)
                    try await printDocument(of: id, store: store, prices: runtime.settings.prices, json: json)
                    throw ExitCode(ExitStatus.needsAttention)
                }
                var configuration = try options.applied(to: summary.configuration)
                try await refuseWorkspaceChange(from: summary.configuration, to: configuration, store: store)
                let runtime = try toolRuntime(runtime, configuration: &configuration)
                let model = try runtime.model(for: configuration)
                var tools: ToolRegistry
                do {
                    tools = try await runtime.tools(for: configuration)
                } catch let error as TroupeError where error.details["reason"] == "tooManyTools" && !useCurrentToolSettings {
                    // Changing tools.allow does nothing for a run that keeps its journaled rules.
                    throw TroupeError(
                        error.code, error.message + " For this run, change them and resume with --use-current-tool-settings.",
                        details: error.details)
                }
                if !json && TerminalApprover.isAvailable { tools.approver = TerminalApprover() }
                let printer = ProgressPrinter(enabled: !json)
                let driver = runtime.driver(model: model, tools: tools, observer: printer.observer)
                Signals.exitWithResumeHint(runID: id.rawValue, storeHint: runtime.opened.flag)
                let resolution: AttentionResolution? = retry ? .retry : skip ? .skip : nil
                // The call the operator decides on is the one the run is parked on now; if another
                // process changes that before this one takes the run, the decision is refused.
                var parkedOn: ActivityKey?
                if resolution != nil && summary.status == .needsAttention {
                    parkedOn = try RunStateMachine(runID: id, replaying: try await store.events(of: id)).attentionKey
                }
                if resolution != nil && summary.status != .needsAttention {
                    note(
                        "▸ run \(id) is not waiting for a decision: --retry/--skip apply only to the call a parked run "
                            + "names, and are not used; if this run parks on a call, you will be shown which", json: json)
                }
                let takeover = LeaseTakeover(
                    store: store, runID: id,
                    report: { message in
                        note("▸ \(message)", json: json)
                    })
                let final = try await takeover.drive { replacing in
                    try await driver.drive(
                        id, replacing: replacing, resolution: resolution, attentionKey: parkedOn, configuration: configuration)
                }
                Signals.exitAfterRun(final.status)
                try await finish(final, store: runtime.opened, json: json)
            }
        }
    }

    /// Through a server: the run is handed to its workers (with the decision for a parked call),
    /// then followed to its end as a local resume would print it. Run options cannot change
    /// through a server: its settings decide them.
    private func resume(through server: RemoteServer) async throws {
        if options.isEmpty == false || useCurrentToolSettings {
            throw TroupeError(.invalidInput, "Run options cannot change through a server; resume with --retry or --skip only.")
        }
        let decision: Components.Schemas.ResumeRunRequest.DecisionPayload? = retry ? .retry : skip ? .skip : nil
        if decision == nil {
            // As locally: a parked run without a decision is shown, not refused.
            let current = try RemoteServer.report(try await server.call { try await $0.getRun(path: .init(id: runID)).ok.body.json })
            if current.status == RunStatus.needsAttention.rawValue {
                note("Run \(runID) needs attention: \(current.error?.message ?? "")", json: json)
                try server.finish(current, json: json)
                return
            }
        }
        let queued = try RemoteServer.report(
            try await server.call { try await $0.resumeRun(path: .init(id: runID), body: .json(.init(decision: decision))).ok.body.json })
        guard let status = RunStatus(rawValue: queued.status), !status.isTerminal, status != .needsAttention else {
            note(
                "Run \(runID) \(queued.status == RunStatus.needsAttention.rawValue ? "needs attention" : "already \(queued.status)").",
                json: json)
            try server.finish(queued, json: json)
            return
        }
        note("▸ run \(runID) is handed to the server's workers", json: json)
        let final = try await server.follow(RunID(runID), observer: ProgressPrinter(enabled: !json).observer)
        try server.finish(final, json: json)
    }

    /// The runtime whose tool rules the run uses: those journaled when it started (with only
    /// the MCP servers it had, each still defined as it was), unless `--use-current-tool-settings`
    /// or the run predates journaled rules; `configuration` then carries the rules to journal.
    private func toolRuntime(_ runtime: Runtime, configuration: inout RunConfiguration) throws -> Runtime {
        let current = ToolRules(runtime.settings, toolGroups: configuration.tools)
        guard !useCurrentToolSettings, let journaled = try ToolRules.journaled(in: configuration) else {
            if !useCurrentToolSettings {
                note(
                    "▸ run \(runID) was journaled before tool rules were recorded: the current settings' tool rules apply "
                        + "(and are journaled now)", json: json)
            } else if configuration.toolRules != current.jsonValue {
                note("▸ the current settings' tool rules and MCP servers replace the run's journaled ones", json: json)
            }
            configuration.toolRules = current.jsonValue
            return runtime
        }
        if current.policy != journaled.policy || current.shell != journaled.shell || current.web != journaled.web
            || Set(current.protectedPaths) != Set(journaled.protectedPaths)
        {
            note(
                "▸ the current settings' tool rules differ from those run \(runID) started with; the run keeps its own "
                    + "(pass --use-current-tool-settings to apply the current ones)", json: json)
        }
        let (applied, rules) = try runtime.applying(journaled, toolGroups: configuration.tools)
        configuration.toolRules = rules.jsonValue
        return applied
    }

    /// A run whose tool calls are unfinished continues in the workspace they started in: an
    /// unfinished `fs_write` run again elsewhere would write somewhere the run never looked.
    private func refuseWorkspaceChange(
        from recorded: RunConfiguration, to configuration: RunConfiguration, store: any RunStore
    ) async throws {
        guard configuration.workspace != recorded.workspace else { return }
        let machine = try RunStateMachine(runID: RunID(runID), replaying: try await store.events(of: RunID(runID)))
        let unfinished = machine.activities.values.filter { record in
            guard record.status == .started, case .tool = record.kind else { return false }
            return true
        }
        guard let first = unfinished.map(\.key.description).sorted().first else { return }
        throw TroupeError(
            .invalidInput,
            "Run \(runID) has \(unfinished.count) unfinished tool call(s) (\(first)) started in \(recorded.workspace); it cannot move "
                + "to \(configuration.workspace) until they are settled. Resume it without --workspace first.")
    }

    /// The finished or parked run as `--json` prints it.
    private func printDocument(of id: RunID, store: any RunStore, prices: PriceTable, json: Bool) async throws {
        guard json else { return }
        let machine = try RunStateMachine(runID: id, replaying: try await store.events(of: id))
        print(try RunReport(summary: try await store.requireRun(id), machine: machine, prices: prices).json())
    }
}
