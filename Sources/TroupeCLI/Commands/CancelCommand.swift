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
    @OptionGroup var remote: ServerOption

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            let id = RunID(runID)
            let outcome: RunStatus?
            if let server = try remote.remote() {
                let before = try await server.call { try await $0.getRun(path: .init(id: runID)).ok.body.json }
                if let status = RunStatus(rawValue: before.status.rawValue), status.isTerminal {
                    outcome = status
                } else {
                    _ = try await server.call { try await $0.cancelRun(path: .init(id: runID), body: .json(.init(reason: reason))).ok }
                    outcome = nil
                }
            } else {
                outcome = try await global.withStore { opened in try await opened.store.cancelRun(id, reason: reason) }
            }
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
