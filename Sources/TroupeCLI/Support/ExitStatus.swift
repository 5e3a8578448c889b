import ArgumentParser
import Foundation
import Logging
import Troupe

/// The CLI's documented exit codes (see `troupe --help` and docs/CLI.md).
enum ExitStatus {
    static let succeeded: Int32 = 0
    static let runFailed: Int32 = 1
    static let needsAttention: Int32 = 2
    static let cancelled: Int32 = 3
    static let leaseHeld: Int32 = 4
    static let notFound: Int32 = 5
    static let invalidInput: Int32 = 6
    static let storage: Int32 = 7
    static let internalError: Int32 = 70

    /// The exit code for a run that ended (or stopped) in `status`.
    static func forRun(_ status: RunStatus) -> Int32 {
        switch status {
        case .succeeded: succeeded
        case .failed: runFailed
        case .needsAttention, .waitingForApproval, .pending, .running: needsAttention
        case .cancelled: cancelled
        }
    }

    static func forError(_ error: TroupeError) -> Int32 {
        switch error.code {
        case .leaseHeld, .journalConflict: leaseHeld
        case .notFound: notFound
        case .invalidInput, .configuration, .invalidJSON, .schemaViolation, .authentication, .invalidTransition:
            invalidInput
        case .storage, .storageUnavailable: storage
        case .cancelled: cancelled
        default: internalError
        }
    }
}

/// Runs a command body, turning errors into one clear line on stderr and the documented exit code.
func reportingErrors(verbose: Bool, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let exit as ExitCode {
        throw exit
    } catch let error as TroupeError {
        let error = Redactor.shared.redact(error)
        var line = "error: \(error.message)"
        if verbose {
            line += "\n  code: \(error.code)"
            for (key, value) in error.details.sorted(by: { $0.key < $1.key }) {
                line += "\n  \(key): \(value)"
            }
            if let underlying = error.underlying { line += "\n  cause: \(underlying)" }
        }
        printError(line)
        throw ExitCode(ExitStatus.forError(error))
    } catch {
        if error is CancellationError { throw ExitCode(ExitStatus.cancelled) }
        printError("error: \(error)")
        throw ExitCode(ExitStatus.internalError)
    }
}

func printError(_ text: String) {
    tell(text, level: .error)
}

/// A line for the operator on standard error: plain text, or — when this process logs JSON
/// (`serve` and `worker` by default) — a log line of `troupe.cli`, so that a collector reading
/// JSON lines gets it too (listening, drain notices, fatal errors).
func tell(_ text: String, level: Logger.Level = .notice) {
    let line = text.trimmingCharacters(in: .newlines)
    if LogOutput.format == .json {
        Logger(label: "troupe.cli").log(level: level, "\(line)")
    } else {
        FileHandle.standardError.write(Data((TerminalText.safe(text) + (text.hasSuffix("\n") ? "" : "\n")).utf8))
    }
}
