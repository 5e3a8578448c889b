import ArgumentParser
import Foundation
import Troupe
import TroupeSettings

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Claim runs from the store and drive them, until SIGTERM or Ctrl-C.",
        discussion: """
            A worker claims runs that are waiting — created without a driver (troupe submit, the API), left by a \
            process that died or froze (its lease expired), handed back by a draining worker — and drives each from \
            its journal as resume would: finished calls are replayed, and a side-effecting call that was in flight \
            parks its run in needsAttention. Run as many workers as you like, on as many machines as share the \
            store (PostgreSQL); each run has one driver at a time, and a driver whose lease was taken over writes \
            nothing more.

            Workers wake at once for new runs on PostgreSQL (LISTEN/NOTIFY) and poll every worker.pollInterval \
            seconds besides. A run whose drive fails is tried again after a back-off (5 s, doubling), and after \
            worker.maxAttempts failures in a row is left for `troupe resume`.

            SIGTERM or SIGINT drains: no new run is claimed, the runs in hand launch nothing new and are handed \
            back (their leases released, so another worker continues them at once) as soon as nothing is in \
            flight, at most worker.drainTimeout seconds; then the worker exits 0. A second signal stops at once.

            The settings come from --config or $TROUPE_CONFIG only (never an implicit ./troupe.yaml: a worker \
            drives runs whose workspaces it did not choose). Logs go to stderr.
            """
    )

    @Option(name: .long, help: "The most runs driven at once (default: worker.concurrency, 8).")
    var concurrency: Int?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let concurrency, !(1...1000).contains(concurrency) {
            throw ValidationError("--concurrency must be between 1 and 1000 (got \(concurrency)).")
        }
    }

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            try await global.withRuntime(namedFileOnly: true) { runtime in
                let settings = runtime.settings.worker
                let logger = global.logger(label: "troupe.worker")
                await runtime.reportShellSandbox(to: logger)
                let drain = DrainSignal()
                Signals.drainThenStop(drain, what: "no new runs; the runs in hand are handed back", timeout: settings.drainTimeoutSeconds)
                let worker = runtime.worker(concurrency: concurrency ?? settings.concurrency, logger: logger)
                let tally = await worker.run(until: drain)
                tell(
                    "troupe worker stopped: \(tally.claimed) claimed, \(tally.finished) finished, \(tally.handedBack) handed back, "
                        + "\(tally.cancelled) cancelled at the drain timeout, \(tally.lostLeases) taken over, \(tally.failed) failed")
            }
        }
    }
}
