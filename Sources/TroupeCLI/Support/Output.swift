import ArgumentParser
import Foundation
import Troupe

/// Prints the outcome of a driven run and exits with its status.
func finish(_ machine: RunStateMachine, store: OpenedStore, json: Bool) async throws {
    let summary = try await store.store.requireRun(machine.runID)
    if json {
        print(try RunReport(summary: summary, machine: machine).json())
    } else {
        switch machine.status {
        case .succeeded:
            say("\nAnswer:\n\(machine.answer ?? "")\n")
        case .failed, .cancelled:
            say("\n\(machine.status.rawValue): \(machine.error?.message ?? "")")
        case .needsAttention:
            say("\nneeds attention: \(summary.error?.message ?? "")")
        default:
            break
        }
        say("Journal: \(store.location) · inspect with `troupe show \(machine.runID)\(store.flag)`")
    }
    let code = ExitStatus.forRun(machine.status)
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
