import Foundation
import Logging
internal import MCP
import Subprocess
import SystemPackage
import TroupeCore
import TroupeTools

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// MCP's stdio transport to a server process Troupe starts: JSON-RPC messages, one per line, on
/// the process's stdin and stdout (swift-subprocess reads and writes them without polling).
///
/// The process runs in a process group of its own; when it exits (or is stopped) the whole
/// group is killed, so helpers it started (`uvx` → `python`) do not outlive it. Its stderr is
/// kept (the last 4 KiB) to explain a crash.
actor StdioServerTransport: MCP.Transport, SupervisedTransport {
    nonisolated let logger: Logger
    private let serverName: String
    private let command: String
    private let arguments: [String]
    private let environment: [String: String]
    private let workingDirectory: String?
    /// The sandbox it runs in, if any (``MCPServerConfiguration/sandbox``).
    private let sandboxing: MCPServerConfiguration.Sandboxing?

    private let messages: AsyncThrowingStream<Data, any Error>
    /// The server's messages not yet taken by the client: bounded, so that a server that writes
    /// faster than the client reads is made to wait (its stdout is not read meanwhile, its pipe
    /// fills, and its writes block) instead of filling Troupe's memory.
    private let queue: BoundedMessageQueue
    private var writer: StandardInputWriter?
    private var runTask: Task<Void, Never>?
    private var launch: CheckedContinuation<Void, any Error>?
    /// The process's ID once started (its group's ID too).
    private(set) var processID: Int32 = 0
    /// Why the process is gone, once it is.
    private(set) var endReason: String?
    /// Whether the process has exited and its pipes are closed.
    private var finished = false
    private var endWaiters: [CheckedContinuation<String, Never>] = []
    /// Whether a message is being written; the others wait their turn, in order (the actor
    /// lets another `send` in while one waits for the pipe, and two messages' bytes must never
    /// mix).
    private var writing = false
    private var writeQueue: [CheckedContinuation<Void, Never>] = []

    /// The longest message (one line) accepted from the server.
    static let maxMessageBytes = 32 << 20
    /// The most bytes of messages held for the client before the server is made to wait.
    static let maxQueuedBytes = 64 << 20
    static let stderrTailBytes = 4096
    /// Lines of a server's stdout that are not messages logged (each clipped); later ones are not.
    static let maxStrayLinesLogged = 5

    init(
        serverName: String,
        command: String,
        arguments: [String],
        environment: [String: String],
        workingDirectory: String?,
        sandboxing: MCPServerConfiguration.Sandboxing? = nil,
        maxQueuedBytes: Int = StdioServerTransport.maxQueuedBytes,
        logger: Logger
    ) {
        self.sandboxing = sandboxing
        self.queue = BoundedMessageQueue(limit: maxQueuedBytes)
        self.serverName = serverName
        self.command = command
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.logger = ClippedLog.logger(logger)
        messages = AsyncThrowingStream(unfolding: { [queue] in await queue.next() })
    }

    /// Starts the process; returns once it runs (or throws why it could not start).
    func connect() async throws {
        guard runTask == nil else { return }
        Self.ignoreBrokenPipes
        try await withCheckedThrowingContinuation { (launch: CheckedContinuation<Void, any Error>) in
            self.launch = launch
            runTask = Task { await self.run() }
        }
    }

    /// Writes one message (one line). Messages are written one at a time, whole: a write cut
    /// short has left part of a message on the server's stdin, which nothing can repair, so the
    /// server is stopped (and restarted for the next call).
    func send(_ data: Data) async throws {
        await takeWriteTurn()
        defer { passWriteTurn() }
        guard let writer, endReason == nil else {
            throw TroupeError(.toolFailed, "MCP server '\(serverName)' is not running\(endReason.map { ": \($0)" } ?? ".")")
        }
        var line = [UInt8](data)
        line.append(UInt8(ascii: "\n"))
        let written: Int
        do {
            written = try await writer.write(line)
        } catch {
            throw TroupeError(.toolFailed, "Could not write to MCP server '\(serverName)': \(error)")
        }
        guard written == line.count else {
            // Usually the process has just exited (its exit, with its error output, becomes the
            // reason it ended); if it is alive, it is stopped: half a message cannot be taken back.
            let reason = "a message to it was cut short (\(written) of \(line.count) bytes written)"
            if processID > 0 { kill(-processID, SIGKILL) }
            throw TroupeError(.toolFailed, "Could not write to MCP server '\(serverName)': \(reason); it is restarted for the next call.")
        }
    }

    private func takeWriteTurn() async {
        guard writing else {
            writing = true
            return
        }
        await withCheckedContinuation { writeQueue.append($0) }
    }

    /// Hands the turn to the next waiting message, if any (it stays taken), else frees it.
    private func passWriteTurn() {
        if writeQueue.isEmpty {
            writing = false
        } else {
            writeQueue.removeFirst().resume()
        }
    }

    nonisolated func receive() -> AsyncThrowingStream<Data, any Error> { messages }

    /// The bytes of messages waiting for the client.
    var queuedBytes: Int { queue.heldBytes }

    /// Stops the server as MCP's stdio transport asks: stdin closed, then SIGTERM to its group
    /// after a moment, then SIGKILL.
    func disconnect() async {
        guard let runTask else { return }
        if endReason == nil { endReason = "it was stopped" }
        // No one reads the messages any more: a server blocked on a full queue is let go (its
        // output is drained and dropped until it exits).
        queue.finish()
        try? await writer?.finish()
        if await finishes(within: .seconds(2)) { return }
        if processID > 0 { kill(-processID, SIGTERM) }
        if await finishes(within: .seconds(2)) { return }
        if processID > 0 { kill(-processID, SIGKILL) }
        await runTask.value
    }

    /// Returns when the process has exited (or could not start), with why.
    func ended() async -> String {
        if finished { return endReason ?? "it exited" }
        return await withCheckedContinuation { endWaiters.append($0) }
    }

    private func finish() {
        finished = true
        writer = nil
        queue.finish()
        for waiter in endWaiters { waiter.resume(returning: endReason ?? "it exited") }
        endWaiters = []
    }

    // MARK: - The process

    private func run() async {
        var options = PlatformOptions()
        options.processGroupID = 0  // a group of its own, so that all it starts can be stopped together
        options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: .seconds(2))]
        var variables: [Environment.Key: String] = [:]
        for (name, value) in environment {
            if let key = Environment.Key(rawValue: name) { variables[key] = value }
        }
        var executable: Executable = command.contains("/") ? .path(FilePath(command)) : .name(command)
        var arguments = arguments
        var workingDirectory = workingDirectory
        var sandboxed: SandboxedCommand?
        if let sandboxing {
            do throws(TroupeError) {
                let command = try await sandboxedCommand(sandboxing)
                executable = .path(FilePath(command.executable))
                arguments = command.arguments
                workingDirectory = nil
                sandboxed = command
            } catch {
                launchFailed(error.message)
                return
            }
        }
        let queue = queue
        let logger = logger
        var status = "it exited"
        var stderrTail = ""
        do {
            let result = try await Subprocess.run(
                executable, arguments: Arguments(arguments), environment: .custom(variables),
                workingDirectory: workingDirectory.map { FilePath($0) }, platformOptions: options, input: .inputWriter,
                output: .sequence, error: .sequence
            ) { execution in
                self.started(execution.processIdentifier.value, writer: execution.standardInputWriter)
                return try await Self.pump(execution, into: queue, logger: logger)
            }
            stderrTail = result.closureResult
            switch result.terminationStatus {
            case .exited(let code): status = "it exited with status \(code)"
            case .signaled(let signal): status = "it was killed by signal \(signal)\(signal == SIGKILL ? " (SIGKILL)" : "")"
            }
        } catch let error as StdioServerTransport.Overflow {
            status = error.message
        } catch {
            if processID == 0 {
                await sandboxed?.end()
                launchFailed("Could not start MCP server '\(serverName)' (\(command)): \(error)")
                return
            }
            status = "its pipes failed: \(error)"
        }
        // Whatever the server left running in its group goes with it.
        if processID > 0 {
            kill(-processID, SIGKILL)
            ChildProcessGroups.unregister(processID)
        }
        await sandboxed?.end()
        let tail = stderrTail.trimmingCharacters(in: .whitespacesAndNewlines)
        if endReason == nil {
            endReason = status + (tail.isEmpty ? "" : ". Its last error output: \(tail.clipped(to: 1000))")
        }
        finish()
        logger.info("MCP server stopped", metadata: ["server": "\(serverName)", "reason": "\(endReason ?? status)"])
    }

    /// The server's program made ready for its sandbox: the sandbox of this process (as
    /// `shell_run`'s), showing the server's paths and its working directory (read-only), with
    /// the program found on the host first; a program the sandbox would not show is refused
    /// with what to add.
    private func sandboxedCommand(_ sandboxing: MCPServerConfiguration.Sandboxing) async throws(TroupeError) -> SandboxedCommand {
        var sandbox: Sandbox
        do throws(TroupeError) {
            sandbox = try await Sandbox.shared(network: sandboxing.network)
        } catch {
            throw TroupeError(
                .configuration, "MCP server '\(serverName)' runs in a sandbox (sandbox: true), and none can start: \(error.message)")
        }
        sandbox.readOnlyPaths = sandboxing.readOnlyPaths
        sandbox.writablePaths = sandboxing.writablePaths
        try sandboxing.checkPaths(server: serverName, workingDirectory: workingDirectory)
        let directory = workingDirectory ?? "/tmp"
        if let workingDirectory, !sandbox.shows(workingDirectory) { sandbox.readOnlyPaths.append(workingDirectory) }
        let program: String?
        if command.contains("/") {
            program =
                URL(
                    fileURLWithPath: command, relativeTo: URL(fileURLWithPath: workingDirectory ?? FileManager.default.currentDirectoryPath)
                )
                .standardizedFileURL.path
        } else {
            program = (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map { "\($0)/\(command)" }
                .first { access($0, X_OK) == 0 }
        }
        guard let program, access(program, X_OK) == 0 else {
            throw TroupeError(.configuration, "MCP server '\(serverName)': its program '\(command)' is not found.")
        }
        guard sandbox.shows(program) else {
            let real = URL(fileURLWithPath: program).resolvingSymlinksInPath().path
            throw TroupeError(
                .configuration,
                "MCP server '\(serverName)' runs in a sandbox that does not show its program \(program)"
                    + (real == program ? "" : " (\(real))") + ": add the folder it is installed in to readOnlyPaths.")
        }
        return try sandbox.wrap(program, arguments: arguments, workspace: nil, directory: directory)
    }

    private func started(_ pid: Int32, writer: StandardInputWriter) {
        processID = pid
        ChildProcessGroups.register(pid)
        self.writer = writer
        launch?.resume()
        launch = nil
    }

    private func launchFailed(_ message: String) {
        endReason = message
        finish()
        launch?.resume(throwing: TroupeError(.configuration, message))
        launch = nil
    }

    struct Overflow: Error {
        var message: String
    }

    /// Splits stdout into messages (lines) and keeps the tail of stderr, until both end; returns
    /// the stderr tail.
    private static func pump(
        _ execution: Execution<CustomWriteInput, SequenceOutput, SequenceOutput>,
        into queue: BoundedMessageQueue,
        logger: Logger
    ) async throws -> String {
        try await withThrowingTaskGroup(of: String?.self) { tasks in
            tasks.addTask {
                var pending: [UInt8] = []
                var strayLines = 0
                for try await buffer in execution.standardOutput {
                    // Only the new bytes are searched: a long line arriving in many chunks is
                    // scanned once, not once per chunk.
                    var searchFrom = pending.count
                    buffer.withUnsafeBytes { bytes in pending.append(contentsOf: bytes) }
                    var start = 0
                    while let newline = pending[searchFrom...].firstIndex(of: UInt8(ascii: "\n")) {
                        let line = pending[start..<newline]
                        switch line.first(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\t") }) {
                        case UInt8(ascii: "{")?, UInt8(ascii: "[")?:
                            await queue.send(Data(line))
                        case nil:
                            break
                        default:
                            // Not a JSON-RPC message (a server's stray print): noted, clipped, and
                            // a few times at most, then only counted.
                            strayLines += 1
                            if strayLines <= maxStrayLinesLogged {
                                logger.warning(
                                    "MCP server wrote a line that is not a message",
                                    metadata: ["line": "\(String(decoding: line.prefix(300), as: UTF8.self))"])
                            }
                        }
                        start = newline + 1
                        searchFrom = start
                    }
                    if start > 0 { pending.removeFirst(start) }
                    if pending.count > maxMessageBytes {
                        throw Overflow(message: "it sent a message over \(maxMessageBytes >> 20) MiB without a line end, and was stopped")
                    }
                }
                return nil
            }
            tasks.addTask {
                var tail: [UInt8] = []
                for try await buffer in execution.standardError {
                    buffer.withUnsafeBytes { bytes in tail.append(contentsOf: bytes) }
                    if tail.count > 2 * stderrTailBytes { tail.removeFirst(tail.count - stderrTailBytes) }
                }
                return String(decoding: tail.suffix(stderrTailBytes), as: UTF8.self)
            }
            var stderrTail = ""
            do {
                while let next = try await tasks.next() {
                    if let next { stderrTail = next }
                }
            } catch {
                // A broken server: stop it (and its group) so that its pipes close.
                kill(-execution.processIdentifier.value, SIGKILL)
                throw error
            }
            return stderrTail
        }
    }

    /// Whether the process ends within `limit` (checked every 20 ms: this is only for stopping).
    private func finishes(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while !finished, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return finished
    }

    /// A write to a server that has died must fail with EPIPE, not kill Troupe with SIGPIPE.
    private static let ignoreBrokenPipes: Void = {
        signal(SIGPIPE, SIG_IGN)
    }()
}
