import Foundation
import Logging
import Troupe

#if canImport(Glibc)
    import Glibc
#endif

/// Real MCP servers for the tests: the `mcp` package's `MCPServer` (Tests/Fixtures/mcp) and the
/// reference `mcp-server-time`, in the Python virtual environment `./scripts/test` makes
/// (`.build/mcp-venv`, or `$TROUPE_MCP_PYTHON`).
enum MCPFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// The venv's Python, if it has the `mcp` package and `mcp-server-time`.
    static let python: String? = {
        let configured = ProcessInfo.processInfo.environment["TROUPE_MCP_PYTHON"].flatMap { $0.isEmpty ? nil : $0 }
        let path = configured ?? root + "/.build/mcp-venv/bin/python"
        guard FileManager.default.isExecutableFile(atPath: path) else { return nil }
        let check = Process()
        check.executableURL = URL(fileURLWithPath: path)
        check.arguments = ["-c", "import mcp.server.mcpserver, mcp_server_time"]
        check.standardOutput = FileHandle.nullDevice
        check.standardError = FileHandle.nullDevice
        do {
            try check.run()
            check.waitUntilExit()
        } catch {
            return nil
        }
        return check.terminationStatus == 0 ? path : nil
    }()

    static var available: Bool { python != nil }

    static let script = root + "/Tests/Fixtures/mcp/fixture_server.py"

    static let logger = Logger(label: "test.mcp", factory: { _ in SwiftLogNoOpLogHandler() })

    /// The fixture server over stdio.
    static func stdio(
        name: String = "fixture",
        callTimeout: Duration = .seconds(30),
        environment: [String: String] = [:],
        readOnlyTools: [String] = [],
        maxRestarts: Int = 5
    ) -> MCPServerConfiguration {
        MCPServerConfiguration(
            name: name,
            transport: .stdio(command: python ?? "python3", arguments: [script, "stdio"], environment: environment, workingDirectory: nil),
            callTimeout: callTimeout, readOnlyTools: readOnlyTools, maxRestarts: maxRestarts)
    }

    /// The reference time server over stdio, in UTC.
    static func time() -> MCPServerConfiguration {
        MCPServerConfiguration(
            name: "time",
            transport: .stdio(
                command: python ?? "python3", arguments: ["-m", "mcp_server_time", "--local-timezone", "UTC"], environment: [:],
                workingDirectory: nil),
            readOnlyTools: ["get_current_time", "convert_time"])
    }

    /// What a sandboxed fixture server must read: the venv, the Python it links to, the fixtures.
    static func sandboxPaths() -> [String] {
        let venv = URL(fileURLWithPath: python ?? "/usr/bin/python3").deletingLastPathComponent().deletingLastPathComponent()
        let installed = venv.appendingPathComponent("bin/python").resolvingSymlinksInPath().deletingLastPathComponent()
            .deletingLastPathComponent()
        return [venv.path, installed.path, root + "/Tests/Fixtures"]
    }

    /// A program that is not an MCP server, run by the venv's Python.
    static func python(name: String, code: String, startupTimeout: Duration = .seconds(30)) -> MCPServerConfiguration {
        MCPServerConfiguration(
            name: name,
            transport: .stdio(command: python ?? "python3", arguments: ["-c", code], environment: [:], workingDirectory: nil),
            startupTimeout: startupTimeout)
    }

    /// Runs `body` with the servers, and stops them (awaited) afterwards, whatever happens.
    static func withServers<T>(_ configurations: [MCPServerConfiguration], _ body: (MCPServers) async throws -> T) async throws -> T {
        let servers = try MCPServers(configurations, logger: logger)
        do {
            let result = try await body(servers)
            await servers.shutdown()
            return result
        } catch {
            await servers.shutdown()
            throw error
        }
    }

    /// Calls `tool` and returns the output, or the error's message as an error output.
    static func call(_ tool: any Tool, _ arguments: JSONValue) async -> ToolOutput {
        let context = ToolContext(runID: RunID("run_mcp"), stepID: "s1", idempotencyKey: "k", workspace: "/tmp", logger: logger)
        do {
            return try await tool.call(arguments, context: context)
        } catch let error as TroupeError {
            return .error(error.message)
        } catch {
            return .error("\(error)")
        }
    }

    /// The outputs of a run's tool calls, in journal order.
    static func toolOutputs(of run: RunID, in store: any RunStore) async throws -> [ToolOutput] {
        try await store.events(of: run).compactMap { record in
            guard case .activityCompleted(_, .tool(let output)) = record.event else { return nil }
            return output
        }
    }

    /// Waits (up to `limit`) for a file a fixture tool writes, and returns its text.
    static func waitForFile(_ path: String, limit: Duration = .seconds(30)) async throws -> String {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: path, encoding: .utf8), !text.isEmpty { return text }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw CLIError(message: "\(path) did not appear within \(limit)")
    }

    /// The CPU time (user and system) this process uses while it waits `duration`.
    static func cpuSeconds(during duration: Duration) async throws -> Double {
        func used() -> Double {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
                + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        }
        let before = used()
        try await Task.sleep(for: duration)
        return used() - before
    }

    /// The live processes whose command line contains `text`.
    static func processes(mentioning text: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: data, as: UTF8.self).contains(text) && isAlive(pid)
        }
    }

    /// The live processes whose environment has `assignment` (`NAME=value`).
    static func processes(withVariable assignment: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return data.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == assignment } && isAlive(pid)
        }
    }

    /// Whether a process with this ID exists (and is not a zombie).
    static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        let status = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return !status.contains(") Z ")
    }
}

/// The fixture server over streamable HTTP on 127.0.0.1, as its own process.
final class MCPHTTPFixture: @unchecked Sendable {
    // Safety: `process` is set up in `init` and afterwards only read.
    let process = Process()
    let url: String
    private let directory: String

    init() async throws {
        guard let python = MCPFixtures.python else { throw CLIError(message: "no MCP venv") }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("troupe-mcp-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let portFile = directory + "/port"
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [MCPFixtures.script, "http", portFile]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let port = try await MCPFixtures.waitForFile(portFile)
        url = "http://127.0.0.1:\(port)/mcp"
        // The port is written before uvicorn listens: wait until it accepts connections.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline, !Self.accepts(port: Int(port) ?? 0) {
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    var processID: Int32 { process.processIdentifier }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
