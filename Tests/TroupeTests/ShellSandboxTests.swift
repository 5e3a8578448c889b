import Foundation
import Testing
import Troupe
import TroupeTesting

/// `shell_run` in the bubblewrap sandbox: the probes a prompt-injected model would try, with the
/// sandbox (stopped) and without it (the documented behaviour, so that the tests prove the sandbox
/// is what stops them). Skipped where bwrap is missing (`./scripts/test` installs it).
@Suite(.enabled(if: access("/usr/bin/bwrap", X_OK) == 0, "needs bubblewrap: ./scripts/test installs it"))
struct ShellSandboxTests {
    /// A policy that lets the probes through the allowlist: only the sandbox stands in the way.
    static func policy(_ sandbox: Sandbox?) -> ShellPolicy {
        var policy = ShellPolicy(
            allowedExecutables: ShellPolicy.readOnlyUtilities.union(["env", "touch", "sh", "python3"]), allowShellScripts: true)
        policy.refusedOptions = [:]
        policy.sandbox = sandbox
        policy.sandboxMode = sandbox == nil ? .none : .bwrap
        return policy
    }

    /// Runs `body` with a shell tool in a fresh workspace, and a folder outside it holding a "store".
    func withProbes(
        network: Bool = false, sandboxed: Bool = true, maxFileBytes: Int? = nil, maxProcesses: Int? = nil,
        _ body: (ShellTool, ToolContext, String) async throws -> Void
    )
        async throws
    {
        try await withTemporaryDirectory { root in
            let outside = root + "/outside"
            let workspacePath = root + "/workspace"
            try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: workspacePath, withIntermediateDirectories: true)
            try "secret journal".write(toFile: outside + "/runs.db", atomically: true, encoding: .utf8)
            let workspace = try Workspace(workspacePath)
            var sandbox = sandboxed ? try await Sandbox.detect(network: network) : nil
            if let maxFileBytes { sandbox?.limits.fileBytes = maxFileBytes }
            if let maxProcesses { sandbox?.limits.processes = maxProcesses }
            let context = ToolContext(
                runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: workspace.root, logger: .init(label: "t"))
            try await body(ShellTool(workspace: workspace, policy: Self.policy(sandbox)), context, outside)
        }
    }

    static func run(_ shell: ShellTool, _ argv: [String], _ context: ToolContext) async throws -> ToolOutput {
        try await shell.call(["command": .array(argv.map(JSONValue.string))], context: context)
    }

    static func exitedZero(_ output: ToolOutput) -> Bool { output.content.hasPrefix("exit status 0") }

    @Test func theHostsSecretsAndOtherFilesCannotBeRead() async throws {
        try await withProbes { shell, context, outside in
            for path in ["/etc/shadow", outside + "/runs.db"] {
                let read = try await Self.run(shell, ["cat", path], context)
                #expect(
                    !Self.exitedZero(read) && !read.content.contains("secret journal") && !read.content.contains("root:"),
                    "\(path): \(read.content)")
            }
            for folder in ["/root", "/home"] {
                let listed = try await Self.run(shell, ["ls", folder], context)
                #expect(!Self.exitedZero(listed), "\(folder): \(listed.content)")
            }
            // The workspace is there, at its own path, and writable.
            let made = try await Self.run(shell, ["touch", "made-inside"], context)
            #expect(Self.exitedZero(made), "\(made.content)")
            #expect(FileManager.default.fileExists(atPath: context.workspace + "/made-inside"))
            let passwd = try await Self.run(shell, ["cat", "/etc/passwd"], context)
            #expect(Self.exitedZero(passwd) && passwd.content.contains("nobody:x:65534") && !passwd.content.contains("/home/"))
        }
    }

    @Test func nothingIsWrittenOutsideTheWorkspace() async throws {
        try await withProbes { shell, context, outside in
            let marker = "/tmp/troupe-probe-\(UUID().uuidString)"
            try FileManager.default.createSymbolicLink(atPath: context.workspace + "/link", withDestinationPath: outside)
            for command in [
                ["touch", outside + "/direct"], ["env", "touch", outside + "/through-env"], ["touch", marker],
                ["find", ".", "-maxdepth", "0", "-exec", "touch", outside + "/through-find", ";"], ["touch", "link/through-link"],
                ["sh", "-c", "echo x > \(outside)/through-sh"],
            ] {
                _ = try await Self.run(shell, command, context)
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: outside) == ["runs.db"])
            #expect(!FileManager.default.fileExists(atPath: marker))
            // Paths the sandbox shows read-only are refused as such, not merely missing.
            for target in ["/usr/troupe-probe", "/etc/passwd"] {
                let refused = try await Self.run(shell, ["touch", target], context)
                #expect(refused.content.contains("Read-only file system"), "\(target): \(refused.content)")
            }
            // Protected files inside the workspace stay read-only; the rest of it is writable.
            try FileManager.default.createDirectory(atPath: context.workspace + "/.git/hooks", withIntermediateDirectories: true)
            let hook = try await Self.run(shell, ["sh", "-c", "echo evil > .git/hooks/pre-commit"], context)
            #expect(!Self.exitedZero(hook) && !FileManager.default.fileExists(atPath: context.workspace + "/.git/hooks/pre-commit"))
            let control = try await Self.run(shell, ["env", "touch", "allowed-inside"], context)
            #expect(Self.exitedZero(control), "\(control.content)")
        }
    }

    @Test func theCommandHasNoPrivilegeNoTerminalAndNoNestedNamespaces() async throws {
        try await withProbes { shell, context, _ in
            let status = try await Self.run(shell, ["grep", "-E", "^(CapEff|CapBnd|NSsid):", "/proc/self/status"], context)
            #expect(
                status.content.contains("CapEff:\t0000000000000000") && status.content.contains("CapBnd:\t0000000000000000"),
                "\(status.content)")
            let remount = try await Self.run(shell, ["sh", "-c", "mount -o remount,rw /usr"], context)
            #expect(!Self.exitedZero(remount))
            // A session of its own, inside the sandbox (an inherited one's leader would be outside: 0).
            let session = try await Self.run(shell, ["python3", "-c", "import os; print('sid', os.getsid(0))"], context)
            #expect(Self.exitedZero(session) && !session.content.contains("sid 0\n"), "\(session.content)")
            let nested = try await Self.run(shell, ["sh", "-c", "unshare -U true && echo nested"], context)
            #expect(!Self.exitedZero(nested) && !nested.content.contains("nested"), "\(nested.content)")
        }
    }

    @Test func aDiskFillerIsStoppedByTheLimitNotTheTimeout() async throws {
        try await withProbes(maxFileBytes: 1 << 20) { shell, context, _ in
            let filler = try await Self.run(shell, ["sh", "-c", "head -c 50000000 /dev/zero > big; echo status $?"], context)
            #expect(filler.content.contains("status 153"), "SIGXFSZ: \(filler.content)")
            let size = try FileManager.default.attributesOfItem(atPath: context.workspace + "/big")[.size] as? Int
            #expect(size == 1 << 20)
        }
    }

    /// A fork bomb meets the process limit (a pids cgroup of the call's own, which holds for root
    /// too) and dies out long before the timeout; the machine's process count is back after.
    @Test func aForkBombIsStoppedByTheProcessLimit() async throws {
        let sandbox = try await Sandbox.detect()
        guard !sandbox.processLimitDescription.hasPrefix("no process limit") else { return }
        try await withProbes(maxProcesses: 64) { shell, context, _ in
            let before = Self.processCount()
            let bomb = try await shell.call(
                ["command": ["sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 1; echo survived"], "timeoutSeconds": 60],
                context: context)
            #expect(!bomb.content.contains("timed out"), "\(bomb.content.prefix(300))")
            #expect(bomb.content.contains("fork"), "the limit said no: \(bomb.content.prefix(300))")
            try await eventually("the bomb's processes are gone") { Self.processCount() <= before + 5 }
        }
    }

    /// `--die-with-parent` kills the sandbox when the *thread* that started it ends. That thread
    /// is swift-subprocess's own spawning thread, which lives as long as Troupe; a pool thread
    /// would end after 5 s idle (libdispatch) and take a longer command with it.
    @Test func aCommandOutlivesIdleThreads() async throws {
        try await withProbes { shell, context, _ in
            let run = try await shell.call(["command": ["sh", "-c", "sleep 6; echo slept"], "timeoutSeconds": 30], context: context)
            #expect(run.content.hasPrefix("exit status 0"), "\(run.content)")
        }
    }

    /// A tool of a user's own runs a program in the same sandbox through the public API, as
    /// docs/TOOLS.md shows: its status, output and limits, a timeout, and a refused workspace.
    @Test func aCustomToolUsesTheSandboxThroughItsPublicAPI() async throws {
        try await withTemporaryDirectory { directory in
            try "one\ntwo\n".write(toFile: directory + "/notes.txt", atomically: true, encoding: .utf8)
            var sandbox = try await Sandbox.detect()
            sandbox.limits.processes = 64
            let counted = try await sandbox.run("/usr/bin/wc", arguments: ["-l", "notes.txt"], workspace: directory, timeout: .seconds(10))
            #expect(counted.end == .exited(0) && counted.standardOutput == "2 notes.txt\n", "\(counted.standardOutput)")
            let report = counted.report(command: ["wc", "-l", "notes.txt"], timeout: .seconds(10))
            #expect(!report.isError && report.content.hasPrefix("exit status 0"))
            let shadow = try await sandbox.run("/usr/bin/cat", arguments: ["/etc/shadow"], workspace: directory)
            #expect(shadow.end == .exited(1) && shadow.standardError.contains("No such file"), "\(shadow.standardError)")
            let slow = try await sandbox.run("/usr/bin/sleep", arguments: ["30"], workspace: directory, timeout: .milliseconds(300))
            #expect(slow.end == .timedOut)
            await #expect(throws: TroupeError.self) { _ = try await sandbox.run("/usr/bin/true", workspace: "/") }
        }
    }

    /// What would run code later outside the sandbox cannot be created or swapped from inside:
    /// missing `.git`, hooks folders and `.pre-commit-config.yaml` are held by placeholders (gone
    /// again after the call), a store in the workspace keeps its folder and its WAL read-only, and
    /// a protected name that is a symbolic link out stops the call instead of being followed.
    @Test func protectedPathsCannotBeCreatedSwappedOrFollowed() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            try FileManager.default.createDirectory(atPath: directory + "/.troupe", withIntermediateDirectories: true)
            try Data("SQLite format 3\0 and the rest".utf8).write(to: URL(fileURLWithPath: directory + "/.troupe/runs.db"))
            try Data("SQLite format 3\0 settings".utf8).write(to: URL(fileURLWithPath: directory + "/top.db"))
            try Data().write(to: URL(fileURLWithPath: directory + "/top.db-wal"))
            var policy = Self.policy(try await Sandbox.detect())
            policy.protectedPaths = [directory + "/.troupe/runs.db", directory + "/top.db"]
            let shell = ShellTool(workspace: workspace, policy: policy)
            let context = ToolContext(
                runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: directory, logger: .init(label: "t"))
            for attempt in [
                "mkdir .git/hooks", "printf 'repos: []' > .pre-commit-config.yaml", "mkdir .husky/x", "mv .troupe moved",
                "echo forged > .troupe/runs.db-wal", "echo forged > top.db-wal", "echo forged > top.db", "rm -rf .troupe",
            ] {
                let output = try await Self.run(shell, ["sh", "-c", attempt + " && echo done"], context)
                #expect(!output.content.contains("done"), "\(attempt): \(output.content)")
            }
            let made = try await Self.run(shell, ["sh", "-c", "echo fine > notes.txt && echo done"], context)
            #expect(made.content.contains("done"), "the rest of the workspace is writable: \(made.content)")
            let left = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
            #expect(left == [".troupe", "notes.txt", "top.db", "top.db-wal"], "placeholders removed, nothing planted: \(left)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/.troupe") == ["runs.db"])

            try FileManager.default.createSymbolicLink(atPath: directory + "/.envrc", withDestinationPath: "/etc/shadow")
            let linked = try await Self.run(shell, ["cat", "/etc/shadow"], context)
            #expect(linked.isError && linked.content.contains("symbolic link") && !linked.content.contains("root:"), "\(linked.content)")
            // A link that stays inside the workspace is fine, and what it leads to is read-only.
            try FileManager.default.removeItem(atPath: directory + "/.envrc")
            try "export A=1\n".write(toFile: directory + "/shared.env", atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: directory + "/.envrc", withDestinationPath: "shared.env")
            let inside = try await Self.run(shell, ["sh", "-c", "cat .envrc; echo x >> shared.env && echo done"], context)
            #expect(inside.content.contains("export A=1") && !inside.content.contains("done"), "\(inside.content)")
        }
    }

    /// Two calls in one workspace at once: the first to end does not take the second's
    /// placeholders away (the last one removes them).
    @Test func placeholdersHoldUntilTheLastCallInTheWorkspaceEnds() async throws {
        try await withTemporaryDirectory { directory in
            let shell = ShellTool(workspace: try Workspace(directory), policy: Self.policy(try await Sandbox.detect()))
            let context = ToolContext(
                runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: directory, logger: .init(label: "t"))
            async let first = Self.run(shell, ["sh", "-c", "sleep 0.5"], context)
            try await Task.sleep(for: .milliseconds(200))
            let second = try await Self.run(shell, ["sh", "-c", "sleep 1; mkdir -p .git/hooks && echo planted"], context)
            _ = try await first
            #expect(!second.content.contains("planted"), "\(second.content)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty, "the placeholders are gone after the last call")
        }
    }

    /// A `ShellTool` built in code with the default policy (`sandboxMode: auto`) finds the
    /// sandbox on its first call: it never runs unsandboxed by default.
    @Test func aShellToolBuiltInCodeIsSandboxedByDefault() async throws {
        try await withTemporaryDirectory { directory in
            let shell = ShellTool(workspace: try Workspace(directory), policy: ShellPolicy(allowedExecutables: ["cat", "ls"]))
            let context = ToolContext(
                runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: directory, logger: .init(label: "t"))
            let shadow = try await Self.run(shell, ["cat", "/etc/shadow"], context)
            #expect(shadow.isError && !shadow.content.contains("root:"), "\(shadow.content)")
            let root = try await Self.run(shell, ["ls", "/root"], context)
            #expect(root.isError, "\(root.content)")
        }
    }

    static func processCount() -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { Int($0) != nil }.count
    }

    @Test func aWorkspaceThatWouldOpenTheSystemIsRefused() throws {
        let otherHomes = ["/root", "/home"] + ((getpwnam("postgres")?.pointee.pw_dir).map { [String(cString: $0)] } ?? [])
        for workspace in [
            "/", "/tmp", "/usr", "/etc/..", "/usr/local/bin", "/run/user", "/var/spool/cron", "/proc/self", "/sys", "/var",
            ProcessInfo.processInfo.environment["HOME"] ?? "/root",
        ] + otherHomes {
            #expect(Sandbox.refusal(forWorkspace: workspace) != nil, "\(workspace)")
        }
        #expect(Sandbox.refusal(forWorkspace: "/tmp/troupe-test/workspace") == nil)
        #expect(Sandbox.refusal(forWorkspace: "/srv/runs/run_1") == nil)
        // Read, not written: a virtual environment under /usr/local or a home folder.
        #expect(Sandbox.exposure(of: "/usr/local/lib/python3", writable: false) == nil)
        #expect(Sandbox.exposure(of: "/root/.pyenv/versions/3.11.7", writable: false) == nil)
        #expect(Sandbox.exposure(of: "/etc/ssl", writable: false) != nil)
        // A home's configuration is not a workspace; source folders and removable media are.
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "/root"
        #expect(Sandbox.exposure(of: home + "/.ssh", writable: true) != nil)
        #expect(Sandbox.exposure(of: home + "/.config/systemd", writable: true) != nil)
        #expect(Sandbox.exposure(of: home + "/projects/app", writable: true) == nil)
        #expect(Sandbox.exposure(of: "/usr/src/app", writable: true) == nil)
        #expect(Sandbox.exposure(of: "/run/media/alice/disk/project", writable: true) == nil)
        #expect(Sandbox.exposure(of: "/srv/x/../../etc", writable: false) != nil)
        // A link to the system is the system.
        let link = NSTemporaryDirectory() + "troupe-link-\(UUID().uuidString)"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "/")
        defer { try? FileManager.default.removeItem(atPath: link) }
        #expect(Sandbox.refusal(forWorkspace: link) != nil)
    }

    @Test func theNetworkIsClosedUnlessAllowed() async throws {
        try await LocalWebServer.withServer({ _ in LocalWebServer.Reply(body: "canary") }) { listener in
            let probe = ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', \(listener.port)), 3); print('reached')"]
            try await withProbes { shell, context, _ in
                let refused = try await Self.run(shell, probe, context)
                #expect(!refused.content.contains("reached") && refused.content.contains("ConnectionRefused"), "\(refused.content)")
            }
            try await withProbes(network: true) { shell, context, _ in
                let reached = try await Self.run(shell, probe, context)
                #expect(reached.content.contains("reached"), "\(reached.content)")
            }
        }
    }

    @Test func whatACommandLeavesRunningIsGoneAfterTheCall() async throws {
        try await withProbes { shell, context, _ in
            let seconds = "317.\(Int.random(in: 100...999))"
            let run = try await Self.run(
                shell,
                [
                    "sh", "-c",
                    "(setsid sleep \(seconds) > /dev/null 2>&1 &) ; sleep 0.2; pgrep -x sleep > /dev/null && echo started",
                ],
                context)
            #expect(run.content.contains("started"), "the sleep ran inside: \(run.content)")
            try await eventually("the double-forked sleep is gone") {
                let all = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
                return !all.contains { pid in
                    ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").contains(seconds)
                }
            }
        }
    }

    /// Without the sandbox the same probes do what docs/TOOLS.md says (this test runs as the user
    /// who runs Troupe): files outside are read and written, so what stops them above is the
    /// sandbox; only programs that start others are refused.
    @Test func withoutTheSandboxTheProbesGetThrough() async throws {
        try await withProbes(sandboxed: false) { shell, context, outside in
            let read = try await Self.run(shell, ["cat", outside + "/runs.db"], context)
            #expect(read.content.contains("secret journal"))
            _ = try await Self.run(shell, ["touch", outside + "/direct"], context)
            #expect(FileManager.default.fileExists(atPath: outside + "/direct"))
            let env = try await Self.run(shell, ["env", "touch", outside + "/through-env"], context)
            #expect(env.isError && env.content.contains("starts other programs"), "\(env.content)")
            #expect(!FileManager.default.fileExists(atPath: outside + "/through-env"))
        }
    }

    /// `troupe run --tools shell` says how commands will run; `none` is said as a warning, and a
    /// mode that does not exist is refused.
    @Test func theCLISaysWhichSandboxIsOn() async throws {
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 1)) { mock in
            try await withTemporaryDirectory { directory in
                let common = ["--tools", "shell", "--base-url", mock.baseURL, "--store", "sqlite:\(directory)/runs.db"]
                let sandboxed = try await CLIProcess.run(["run", "List"] + common, directory: directory)
                #expect(
                    sandboxed.status == 0 && sandboxed.output.contains("shell_run: sandboxed (/usr/bin/bwrap, no network, "),
                    "\(sandboxed.output)")
                let open = try await CLIProcess.run(["run", "List", "--set", "tools.shell.sandbox=none"] + common, directory: directory)
                #expect(open.status == 0 && open.output.contains("shell_run: NOT sandboxed"), "\(open.output)")
                let bad = try await CLIProcess.run(["run", "List", "--set", "tools.shell.sandbox=maybe"] + common, directory: directory)
                #expect(bad.status == 6 && bad.output.contains("tools.shell.sandbox"), "\(bad.output)")
            }
        }
    }
}
