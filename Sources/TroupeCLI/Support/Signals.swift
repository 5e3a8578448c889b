import Dispatch
import Foundation
import Troupe
import TroupeCore

/// Ctrl-C (SIGINT) and SIGTERM handling for the commands.
enum Signals {
    /// Keeps the signal sources alive for the life of the process. Safety: written only by
    /// `onInterrupt`, which commands call once from their single flow before the work starts.
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []

    /// Runs `handler` on SIGINT or SIGTERM instead of the default (immediate death).
    static func onInterrupt(_ handler: @escaping @Sendable () -> Void) {
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            sources.append(source)
        }
    }

    /// On an interrupt, says how to continue the run, kills the programs tools started (shell
    /// commands, MCP servers), then exits with 130. Nothing needs saving:
    /// every finished call is already journaled, and `resume` takes the run over at once because
    /// this process is gone.
    static func exitWithResumeHint(runID: String, storeHint: String) {
        onInterrupt {
            let message = "\ninterrupted: run \(runID) stopped; continue it with `troupe resume \(runID)\(storeHint)`\n"
            FileHandle.standardError.write(Data(message.utf8))
            ChildProcessGroups.killAll()
            exit(130)
        }
    }
}
