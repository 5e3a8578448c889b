import ArgumentParser
import Foundation
import Troupe

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract:
            "Cancel a run. The cancellation is journaled; a process driving the run stops at its next lease renewal."
    )

    @Argument(help: "The run to cancel.")
    var runID: String

    @Option(name: .long, help: "Why, recorded in the journal.")
    var reason = "Cancelled from the command line."

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            let id = RunID(runID)
            let outcome = try await global.withStore { opened in try await cancel(id, in: opened.store) }
            switch outcome {
            case nil:
                say("Cancelled \(id).")
            case let status?:
                say("Run \(id) already \(status.rawValue).")
                throw ExitCode(ExitStatus.forRun(status))
            }
        }
    }

    /// Appends `runCancelled` at the journal's tail, retrying when a driver appends first.
    /// Returns the status of a run that had already finished, `nil` once cancelled.
    private func cancel(_ id: RunID, in store: any RunStore) async throws -> RunStatus? {
        for _ in 0..<20 {
            let summary = try await store.requireRun(id)
            if summary.status.isTerminal { return summary.status }
            do {
                _ = try await store.append(
                    [.runCancelled(reason: reason)], to: id, expectedSequence: summary.lastSequence,
                    at: Date())
                return nil
            } catch let error as TroupeError where error.code == .journalConflict {
                continue
            }
        }
        throw TroupeError(.journalConflict, "Run \(id) kept changing; try `troupe cancel \(id)` again.")
    }
}
