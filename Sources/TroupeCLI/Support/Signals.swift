import Dispatch
import Foundation
import Synchronization
import Troupe
import TroupeCore

/// Ctrl-C (SIGINT) and SIGTERM handling for the commands.
///
/// One handler is current at a time, and commands change it as they go: before anything starts
/// programs (MCP servers start with the first tool listing), while a run is driven (say how to
/// resume it), and after the run ended (stopping MCP servers may take seconds: an interrupt then
/// must not claim the run was stopped).
enum Signals {
    /// Keeps the signal sources alive for the life of the process. Safety: written once, by
    /// `install`, from the command's single flow before any work starts.
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []
    private static let handler = Mutex<(@Sendable () -> Void)?>(nil)
    private static let cleanups = Mutex<[@Sendable () -> Void]>([])

    /// Adds work every interrupt handler does before the process exits (remove a temporary
    /// folder, say).
    static func cleanUpOnInterrupt(_ cleanup: @escaping @Sendable () -> Void) {
        cleanups.withLock { $0.append(cleanup) }
    }

    /// Kills the programs tools started and runs the clean-ups, then exits with `code`.
    private static func exitAfterCleaningUp(_ code: Int32) -> Never {
        ChildProcessGroups.killAll()
        for cleanup in cleanups.withLock({ $0 }) { cleanup() }
        exit(code)
    }

    /// Makes `handler` what SIGINT or SIGTERM do from now on, instead of the default (immediate
    /// death) or the handler set before.
    static func onInterrupt(_ handler: @escaping @Sendable () -> Void) {
        install
        self.handler.withLock { $0 = handler }
    }

    private static let install: Void = {
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { Signals.handler.withLock { $0 }?() }
            source.resume()
            sources.append(source)
        }
    }()

    /// Before a run exists: kills the programs tools started (MCP servers starting), exits 130.
    static func exitStoppingChildren() {
        onInterrupt {
            tell("\ninterrupted")
            exitAfterCleaningUp(130)
        }
    }

    /// On an interrupt, says how to continue the run, kills the programs tools started (shell
    /// commands, MCP servers), then exits with 130. Nothing needs saving:
    /// every finished call is already journaled, and `resume` takes the run over at once because
    /// this process is gone.
    static func exitWithResumeHint(runID: String, storeHint: String) {
        onInterrupt {
            let message = "\ninterrupted: run \(runID) stopped; continue it with `troupe resume \(runID)\(storeHint)`\n"
            tell(message)
            exitAfterCleaningUp(130)
        }
    }

    /// After the run ended (`status`): an interrupt while MCP servers are stopped kills them and
    /// exits with the run's own code; there is nothing to resume.
    static func exitAfterRun(_ status: RunStatus) {
        onInterrupt {
            tell("\ninterrupted while stopping the tools' programs; the run had already \(status.rawValue)")
            exitAfterCleaningUp(ExitStatus.forRun(status))
        }
    }

    /// For `worker` and `serve`: the first SIGTERM or SIGINT begins `drain` (the command then
    /// finishes its work in hand and exits 0); a second one stops at once, killing the programs
    /// tools started, with 130 — the runs stay safe: their leases expire and another worker
    /// takes them over.
    static func drainThenStop(_ drain: DrainSignal, what: String, timeout: Double) {
        onInterrupt {
            if drain.isDraining {
                tell("\nsecond signal: stopping at once; the runs in hand continue elsewhere once their leases expire")
                exitAfterCleaningUp(130)
            }
            let seconds = timeout == timeout.rounded() ? String(Int(timeout)) : String(timeout)
            tell("\ndraining: \(what) (up to \(seconds) s); signal again to stop at once")
            drain.begin()
            // A call that ignores its cancellation must not keep the process up for ever.
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout + 15) {
                tell(
                    "\nthe drain did not end \(seconds) s + 15 s after it began: stopping at once; the runs in hand continue "
                        + "elsewhere once their leases expire", level: .warning)
                exitAfterCleaningUp(130)
            }
        }
    }
}
