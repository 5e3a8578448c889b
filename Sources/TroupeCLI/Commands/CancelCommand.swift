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
            let outcome = try await global.withStore { opened in try await opened.store.cancelRun(id, reason: reason) }
            switch outcome {
            case nil:
                say("Cancelled \(id).")
            case let status?:
                say("Run \(id) already \(status.rawValue).")
                throw ExitCode(ExitStatus.forRun(status))
            }
        }
    }
}
