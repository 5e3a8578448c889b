import Foundation
import Testing
import Troupe

/// `shell_run` against what a hostile or careless model asks for.
@Suite struct ShellToolTests {
    func context(_ workspace: Workspace) -> ToolContext {
        ToolContext(runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: workspace.root, logger: .init(label: "t"))
    }

    private func withShell(
        _ policy: ShellPolicy = ShellPolicy(),
        _ body: (ShellTool, Workspace, ToolContext) async throws -> Void
    ) async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            // The bare mechanism (groups, timeouts, output): the sandbox has tests of its own.
            var policy = policy
            policy.sandboxMode = .none
            try await body(ShellTool(workspace: workspace, policy: policy), workspace, context(workspace))
        }
    }

    static let scripts = ShellPolicy(allowShellScripts: true)

    /// Whether a process is gone (a zombie waiting for its parent counts as gone).
    static func isGone(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return true }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
    }

    static func pids(in file: String) throws -> [Int32] {
        try String(contentsOfFile: file, encoding: .utf8).split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
    }

    @Test func runsAnAllowedProgramAndReportsItsStatusAndOutput() async throws {
        try await withShell { shell, _, context in
            let hello = try await shell.call(["command": ["echo", "hello", "world"]], context: context)
            #expect(!hello.isError)
            #expect(hello.content.hasPrefix("exit status 0"))
            #expect(hello.content.contains("--- stdout\nhello world\n"))
            let failing = try await shell.call(["command": ["ls", "no-such-file"]], context: context)
            #expect(failing.isError)
            #expect(failing.content.hasPrefix("exit status 2"))
            #expect(failing.content.contains("--- stderr"))
        }
    }

    @Test func programsOffTheListPathsAndScriptsAreRefused() async throws {
        try await withShell { shell, workspace, context in
            for command: JSONValue in [["rm", "-rf", "."], ["/bin/ls"], ["./evil.sh"], ["../bin/ls"], []] {
                let refused = try await shell.call(["command": command], context: context)
                #expect(refused.isError, "\(command) must be refused")
                #expect(!refused.content.hasPrefix("exit status"))
            }
            let script = try await shell.call(["script": "echo hi"], context: context)
            #expect(script.isError && script.content.contains("not allowed"))
            // An explicit null is no script (models send null for optional fields); a script that
            // is not text does not smuggle command past the allowlist.
            let nullScript = try await shell.call(["command": ["pwd"], "script": .null], context: context)
            #expect(!nullScript.isError, "\(nullScript.content)")
            await #expect(throws: TroupeError.self) { _ = try await shell.call(["command": ["ls"], "cwd": "../"], context: context) }
            let missing = try await shell.call(["command": ["ls"], "cwd": "nope"], context: context)
            #expect(missing.isError && missing.content.contains("does not exist"))
            #expect(!shell.parameters.jsonValue.jsonString.contains("\"script\""), "scripts are not offered when refused")
            _ = workspace
        }
    }

    @Test func theChildSeesNoSecretsAndLivesInTheWorkspace() async throws {
        setenv("TROUPE_SHELL_TEST_SECRET", "sk-must-not-leak", 1)
        defer { unsetenv("TROUPE_SHELL_TEST_SECRET") }
        try await withShell(ShellPolicy(allowedExecutables: ["cat", "pwd"])) { shell, workspace, context in
            let env = try await shell.call(["command": ["cat", "/proc/self/environ"]], context: context)
            #expect(!env.content.contains("sk-must-not-leak"))
            #expect(!env.content.contains("OPENAI_API_KEY"))
            #expect(env.content.contains("HOME=\(workspace.root)"))
            #expect(env.content.contains("PATH=/usr/local/bin:/usr/bin:/bin"))
            try FileManager.default.createDirectory(atPath: workspace.root + "/sub", withIntermediateDirectories: true)
            let pwd = try await shell.call(["command": ["pwd"], "cwd": "sub"], context: context)
            #expect(pwd.content.contains("\(workspace.root)/sub\n"))
        }
    }

    /// Without a sandbox, a program that starts others is refused even when it is allowed: it
    /// would run what the allowlist leaves out. A policy may clear the list on purpose.
    @Test func withoutASandboxProgramsThatStartOthersAreRefused() async throws {
        let launchers = [
            "env", "xargs", "nice", "timeout", "sh", "awk", "sed", "git", "python3", "python3.11", "perl5.36", "npx", "gcc", "gcc-12",
            "x86_64",
        ]
        try await withShell(ShellPolicy(allowedExecutables: Set(launchers + ["echo"]))) { shell, workspace, context in
            for program in launchers {
                let refused = try await shell.call(["command": .array([.string(program), "touch", "/tmp/pwn"])], context: context)
                #expect(refused.isError && refused.content.contains("'\(program)' starts other programs"), "\(refused.content)")
            }
            let echo = try await shell.call(["command": ["echo", "fine"]], context: context)
            #expect(!echo.isError && echo.content.contains("fine"))
        }
        var open = ShellPolicy(allowedExecutables: ["env"])
        open.launchers = []
        try await withShell(open) { shell, _, context in
            let env = try await shell.call(["command": ["env", "echo", "chosen"]], context: context)
            #expect(!env.isError && env.content.contains("chosen"), "\(env.content)")
        }
    }

    @Test func aCommandThatRunsTooLongIsKilledWithEverythingItStarted() async throws {
        try await withShell(Self.scripts) { shell, workspace, context in
            let started = ContinuousClock.now
            let output = try await shell.call(
                [
                    "script": "for i in 1 2 3 4 5 6; do (sleep 1000 & echo $! >> pids); done; sleep 1000 & echo $! >> pids; wait",
                    "timeoutSeconds": 0.5,
                ], context: context)
            let elapsed = started.duration(to: .now)
            #expect(output.isError)
            #expect(output.content.contains("timed out after"))
            #expect(elapsed < .seconds(10))
            let pids = try Self.pids(in: workspace.root + "/pids")
            #expect(pids.count == 7)
            try await Task.sleep(for: .milliseconds(100))
            #expect(pids.allSatisfy(Self.isGone), "no orphan is left: \(pids.filter { !Self.isGone($0) })")
        }
    }

    /// The program exits but leaves a child holding its output open: the call returns at once
    /// and the child is killed.
    @Test func aBackgroundChildLeftBehindDoesNotHoldTheCall() async throws {
        try await withShell(Self.scripts) { shell, workspace, context in
            let started = ContinuousClock.now
            let output = try await shell.call(["script": "sleep 1000 & echo $! > pid; echo started"], context: context)
            #expect(started.duration(to: .now) < .seconds(30), "returns long before the child's 1000 s")
            #expect(output.content.hasPrefix("exit status 0"))
            #expect(output.content.contains("started"))
            let pid = try #require(try Self.pids(in: workspace.root + "/pid").first)
            try await Task.sleep(for: .milliseconds(100))
            #expect(Self.isGone(pid))
        }
    }

    @Test func hugeOutputIsCappedAndTheTruncationSaid() async throws {
        try await withShell(Self.scripts) { shell, _, context in
            let smuggled = try await shell.call(["script": 1, "command": ["rm", "-c", "x"]], context: context)
            #expect(smuggled.isError && smuggled.content.contains("script must be text"), "\(smuggled.content)")
            let output = try await shell.call(["script": "head -c 200000 /dev/zero | tr '\\0' a"], context: context)
            #expect(output.content.hasPrefix("exit status 0"))
            #expect(output.content.contains("--- stdout (first 65536 of 200000 bytes; the rest was dropped)"))
            #expect(output.content.count < 70_000)
        }
    }

    @Test func itIsSideEffecting() throws {
        let shell = ShellTool(workspace: try Workspace(FileManager.default.temporaryDirectory.path))
        #expect(shell.effect == .sideEffecting)
        #expect(shell.description.contains("grep"))
    }
}
