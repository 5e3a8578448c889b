import Foundation
import Testing

/// The `troupe` executable built by `swift build` (or `$TROUPE_BIN`).
func troupeExecutable() throws -> String {
    if let path = ProcessInfo.processInfo.environment["TROUPE_BIN"], !path.isEmpty { return path }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let path = root.appendingPathComponent(".build/debug/troupe").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw CLIError(message: "The troupe executable is not built at \(path); run `swift build` (./scripts/test does).")
    }
    return path
}

struct CLIError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// A `troupe` child process whose output goes to files.
final class CLIProcess: @unchecked Sendable {
    // Safety: `process` is configured before `run()` and afterwards only read; Process is thread-safe for these calls.
    let process = Process()
    let outputPath: String
    private let exit: AsyncStream<Int32>
    private let exitContinuation: AsyncStream<Int32>.Continuation

    /// Where stderr goes when it is kept apart from stdout (`separateErrors`).
    let errorPath: String?

    init(_ arguments: [String], directory: String, environment: [String: String] = [:], separateErrors: Bool = false) throws {
        process.executableURL = URL(fileURLWithPath: try troupeExecutable())
        process.arguments = arguments
        // Nothing from the machine's own settings: no keys, no TROUPE_* variables, and the
        // directory (with whatever troupe.yaml the test puts there) as the working directory.
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("TROUPE_") }
        env["OPENAI_API_KEY"] = nil
        env["OPENAI_BASE_URL"] = nil
        env["HOME"] = directory
        process.currentDirectoryURL = URL(fileURLWithPath: directory, isDirectory: true)
        for (key, value) in environment { env[key] = value }
        process.environment = env
        outputPath = directory + "/cli-\(UUID().uuidString.prefix(8)).log"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process.standardOutput = handle
        if separateErrors {
            let path = directory + "/cli-\(UUID().uuidString.prefix(8)).err"
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            errorPath = path
        } else {
            process.standardError = handle
            errorPath = nil
        }
        (exit, exitContinuation) = AsyncStream.makeStream(of: Int32.self)
        let continuation = exitContinuation
        process.terminationHandler = { process in
            continuation.yield(process.terminationStatus)
            continuation.finish()
        }
        try process.run()
    }

    /// Waits for the process to exit and returns its status.
    func wait() async -> Int32 {
        for await status in exit { return status }
        return process.terminationStatus
    }

    /// Polls until `condition` holds; fails (instead of hanging) if the process exits first.
    func waitUntil(_ what: String, _ condition: () -> Bool) async throws {
        while !condition() {
            guard process.isRunning else {
                throw CLIError(message: "troupe exited (\(process.terminationStatus)) before \(what):\n\(output)")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    func kill(_ signal: Int32 = SIGKILL) {
        Foundation.kill(process.processIdentifier, signal)
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// What went to stderr, when it was kept apart.
    var errorOutput: String { errorPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? "" }

    /// Runs `troupe` to completion; returns its exit status and combined output.
    static func run(
        _ arguments: [String],
        directory: String,
        environment: [String: String] = [:]
    ) async throws -> (status: Int32, output: String) {
        let process = try CLIProcess(arguments, directory: directory, environment: environment)
        let status = await process.wait()
        return (status, process.output)
    }

    /// Runs `troupe` to completion; returns its exit status, stdout and stderr apart.
    static func runApart(
        _ arguments: [String],
        directory: String,
        environment: [String: String] = [:]
    ) async throws -> (status: Int32, output: String, errors: String) {
        let process = try CLIProcess(arguments, directory: directory, environment: environment, separateErrors: true)
        let status = await process.wait()
        return (status, process.output, process.errorOutput)
    }
}
