import Dispatch
import Foundation

/// On Ctrl-C (SIGINT) or SIGTERM, says how to continue the run, then exits with 130.
///
/// Nothing needs saving: every finished call is already journaled, and `resume` takes the run
/// over at once because this process is gone.
enum InterruptNotice {
    /// Keeps the signal sources alive for the life of the process. Safety: written only by
    /// `install`, which commands call once from their single flow before driving the run.
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []

    static func install(runID: String, storeHint: String) {
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                let message = "\ninterrupted: run \(runID) stopped; continue it with `troupe resume \(runID)\(storeHint)`\n"
                FileHandle.standardError.write(Data(message.utf8))
                exit(130)
            }
            source.resume()
            sources.append(source)
        }
    }
}
