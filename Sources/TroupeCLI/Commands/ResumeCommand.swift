import ArgumentParser
import Foundation
import Troupe

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract:
            "Continue a run that stopped: a crash, a kill, a lost machine, or a run that needs attention.",
        discussion: """
            The run continues with the configuration recorded when it was created (model, base URL, workspace, \
            tools, limits); flags given here override it and the change is journaled. Finished model and tool \
            calls are replayed from the journal, not repeated. If another live process is driving the run, \
            resume refuses; if that process died, resume takes the run over (at once on this machine, otherwise \
            once its lease expires, 30 s at most).

            A run parked in needsAttention had a side-effecting tool call in flight when its process died. \
            Check whether it took effect, then resume with --retry (run it again) or --skip (do not; the model \
            is told the outcome is unknown).
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
            try await global.withRuntime { runtime in
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
                let final = try await LeaseTakeover(store: store, runID: id, quiet: json).drive {
                    takeOver in
                    try await driver.drive(
                        id, takeOver: takeOver, resolution: resolution, configuration: configuration)
                }
                try await finish(final, store: store, json: json)
            }
        }
    }
}

/// Takes a run over from a driver that is gone, and refuses while a live one holds it.
struct LeaseTakeover {
    let store: any RunStore
    let runID: RunID
    let quiet: Bool
    var clock: any Clock<Duration> = ContinuousClock()

    func drive(_ body: (_ takeOver: Bool) async throws -> RunStateMachine) async throws
        -> RunStateMachine
    {
        do {
            return try await body(false)
        } catch let error as TroupeError where error.code == .leaseHeld {
            guard let lease = try await store.lease(of: runID),
                let owner = LeaseOwner(parsing: lease.owner)
            else { throw error }
            if owner.isDeadOnThisHost {
                if !quiet {
                    say("▸ the process that drove this run (pid \(owner.pid)) is gone; taking over")
                }
                return try await body(true)
            }
            if owner.isOnThisHost { throw error }
            // Another machine: wait out its lease; if it is renewed meanwhile, its driver is alive.
            let wait = max(0, lease.expiresAt.timeIntervalSinceNow) + 0.5
            if !quiet {
                say(
                    "▸ run held by \(lease.owner); waiting up to \(Int(wait.rounded(.up))) s for its lease to expire"
                )
            }
            try await clock.sleep(for: .milliseconds(Int64(wait * 1000)))
            guard let after = try await store.lease(of: runID), after.owner == lease.owner,
                after.expiresAt <= lease.expiresAt
            else {
                throw error
            }
            return try await body(true)
        }
    }
}
