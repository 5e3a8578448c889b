import ArgumentParser
import Foundation
import Troupe

/// Prints the outcome of a driven run and exits with its status.
func finish(_ machine: RunStateMachine, store: OpenedStore, json: Bool) async throws {
    let summary = try await store.store.requireRun(machine.runID)
    if json {
        print(try RunReport(summary: summary, machine: machine, prices: store.prices).json())
    } else {
        let error = machine.status == .needsAttention ? summary.error : machine.error
        sayEnding(machine.status, answer: machine.answer, error: error?.message)
        if machine.status == .waitingForApproval {
            sayWaiting(machine.pendingApprovals.map { RunReport.ApprovalReport($0, of: machine) }, run: machine.runID, flag: store.flag)
        }
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

/// The calls a run waits on, and how to decide them (`flag`: how to reach the same store or server).
func sayWaiting(_ approvals: [RunReport.ApprovalReport], run: RunID, flag: String) {
    guard !approvals.isEmpty else { return }
    say("\nwaiting for approval:")
    for approval in approvals {
        let expiry = approval.expiresAt.map { " · until \(JSONCoding.formatDate($0)), then \(approval.onTimeout ?? "deny")" } ?? ""
        say("  \(approval.callKey)  \(approval.tool) \(approval.arguments.jsonString.clipped(to: 100))  (\(approval.effect)\(expiry))")
    }
    let call = approvals.count == 1 ? "" : " --call \(approvals[0].callKey)"
    say(
        "Decide with `troupe approve \(run)\(call)\(flag)` (or --deny --reason TEXT, or --edit JSON); the run then continues on a "
            + "worker, or here with `troupe resume \(run)\(flag)`.")
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
