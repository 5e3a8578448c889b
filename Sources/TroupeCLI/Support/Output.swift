import ArgumentParser
import Foundation
import Troupe

/// Prints the outcome of a driven run and exits with its status.
func finish(_ machine: RunStateMachine, store: OpenedStore, json: Bool) async throws {
    let summary = try await store.store.requireRun(machine.runID)
    if json {
        print(try RunReport(summary: summary, machine: machine).json())
    } else {
        let error = machine.status == .needsAttention ? summary.error : machine.error
        sayEnding(machine.status, answer: machine.answer, error: error?.message)
        say("Journal: \(store.location) · inspect with `troupe show \(machine.runID)\(store.flag)`")
    }
    try exit(with: machine.status)
}

/// The lines after a run's progress: its answer, or why it stopped.
func sayEnding(_ status: RunStatus, answer: String?, error: String?) {
    switch status {
    case .succeeded: say("\nAnswer:\n\(answer ?? "")\n")
    case .failed, .cancelled: say("\n\(status.rawValue): \(error ?? "")")
    case .needsAttention: say("\nneeds attention: \(error ?? "")")
    default: break
    }
}

/// Ends the command with the run's exit code (nothing for a run that succeeded).
func exit(with status: RunStatus) throws {
    let code = ExitStatus.forRun(status)
    if code != 0 { throw ExitCode(code) }
}

/// A line for people on stdout, with what could drive the terminal taken out (``TerminalText``).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((TerminalText.safe(line) + "\n").utf8))
}

/// A line for people: on stdout, or on stderr when stdout carries `--json` (which must hold the
/// JSON document only).
func note(_ line: String, json: Bool) {
    (json ? FileHandle.standardError : FileHandle.standardOutput).write(Data((TerminalText.safe(line) + "\n").utf8))
}
