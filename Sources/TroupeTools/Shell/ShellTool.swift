import Foundation
import Subprocess
import SystemPackage
import Synchronization
public import TroupeCore

#if canImport(Glibc)
    import Glibc
#endif

/// What `shell_run` may do.
public struct ShellPolicy: Sendable, Hashable {
    /// Programs the model may run, by name (looked up in ``searchPath``). A path, or a name not
    /// listed, is refused.
    public var allowedExecutables: Set<String>
    /// Whether `script` (a shell command line, run by `/bin/sh -c`) is accepted. Off by default:
    /// a shell line can start any program, whatever the allowlist says.
    public var allowShellScripts: Bool
    /// The directories executables are looked up in, and the children's `PATH`.
    public var searchPath: [String]
    /// Variables the children get from this process, when set (everything else — API keys
    /// among them — is withheld). `HOME` is the workspace and `PATH` is ``searchPath``.
    public var inheritedVariables: Set<String>
    /// The longest a command may run (a call may ask for less).
    public var maxTimeout: Duration
    public var defaultTimeout: Duration
    /// Output kept per stream; the rest is counted and dropped.
    public var maxOutputBytes: Int
    /// Options refused per program: the ones that start other programs or write files, which an
    /// allowlist of programs cannot see (``defaultRefusedOptions``).
    public var refusedOptions: [String: RefusedOptions]
    /// Whether commands must run in a sandbox (`tools.shell.sandbox`): what the settings ask for;
    /// ``sandbox`` is what was found.
    public var sandboxMode: SandboxMode = .auto
    /// Whether sandboxed commands may use the network (`tools.shell.network`).
    public var network = false
    /// The sandbox commands run in (``Sandbox``); `nil`: none (they run as Troupe's user, with
    /// everything that user may reach).
    public var sandbox: Sandbox?
    /// Absolute paths commands may not change even inside the workspace (the file tools'
    /// protected files: the settings file, the store), added to the workspace's `.git`, hooks
    /// and `.envrc` (``Sandbox/protectedPaths``).
    public var protectedPaths: [String] = []
    /// The limits of each sandboxed command (`tools.shell.maxProcesses`, `maxFileBytes`,
    /// `maxMemoryBytes`, `maxOpenFiles`); its CPU time is its timeout.
    public var limits = Sandbox.ResourceLimits()
    /// Programs refused when commands run without a sandbox, even when allowed: they start other
    /// programs (``programLaunchers``), which would run whatever the allowlist leaves out.
    public var launchers: Set<String> = ShellPolicy.programLaunchers

    public init(
        allowedExecutables: Set<String> = ShellPolicy.readOnlyUtilities,
        allowShellScripts: Bool = false,
        searchPath: [String] = ["/usr/local/bin", "/usr/bin", "/bin"],
        inheritedVariables: Set<String> = ["LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM"],
        maxTimeout: Duration = .seconds(600),
        defaultTimeout: Duration = .seconds(60),
        maxOutputBytes: Int = 64 << 10,
        refusedOptions: [String: RefusedOptions] = ShellPolicy.defaultRefusedOptions
    ) {
        self.allowedExecutables = allowedExecutables
        self.allowShellScripts = allowShellScripts
        self.searchPath = searchPath
        self.inheritedVariables = inheritedVariables
        self.maxTimeout = maxTimeout
        self.defaultTimeout = min(defaultTimeout, maxTimeout)
        self.maxOutputBytes = maxOutputBytes
        self.refusedOptions = refusedOptions
    }

    /// Utilities that read and report. Reviewed program by program (docs/TOOLS.md): `env` starts
    /// any program, GNU `sort` runs `--compress-program` and writes with `-o`/`-T`, `uniq` writes
    /// its second operand, and `date` sets the clock from an operand (`date 0101000030`) as well
    /// as with `-s`, so none of them is here; the options of `find` and `file` that start programs
    /// or write are refused (``defaultRefusedOptions``).
    public static let readOnlyUtilities: Set<String> = [
        "cat", "cut", "diff", "echo", "false", "file", "find", "grep", "head", "ls", "pwd", "stat", "tail", "tr", "true", "wc",
    ]

    /// Programs that start other programs — `env`, `xargs`, `nice`, `timeout`, shells and
    /// interpreters, `awk` (`system()`), GNU `sed` (its `e` command), `git` (hooks, aliases),
    /// `tar` (`-I PROGRAM`), `make`, editors and pagers (`!`) — refused without a sandbox
    /// (``launchers``). Inside the sandbox they can start only what the sandbox holds.
    public static let programLaunchers: Set<String> = [
        "env", "xargs", "nice", "nohup", "timeout", "setsid", "stdbuf", "chroot", "sudo", "su", "doas", "runuser", "setpriv",
        "flock", "watch", "time", "strace", "ltrace", "unshare", "nsenter", "ionice", "taskset", "chrt", "prlimit", "parallel",
        "script", "ssh", "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "awk", "gawk", "mawk",
        "nawk", "sed", "perl", "python", "python3", "ruby", "node", "php", "lua", "tclsh", "git", "tar", "make", "vi", "vim",
        "nvim", "emacs", "less", "more", "man", "ssh-agent", "dbus-run-session", "systemd-run", "nodejs", "bun", "deno", "pypy",
        "pip", "pip3", "uv", "uvx", "pytest", "npm", "npx", "yarn", "pnpm", "swift", "cargo", "go", "gcc", "cc", "clang", "g++",
        "c++", "clang++", "ninja", "cmake", "gmake", "bmake", "m4", "dc", "ed", "ex", "view", "sqlite3", "psql", "mysql", "gdb",
        "rsync", "scp", "sftp", "zip", "wget", "openssl", "sdiff", "diff3", "socat", "ncat", "nc", "netcat", "tmux", "screen",
        "crontab", "at", "batch", "systemctl", "busctl", "pkexec", "flatpak-spawn", "bwrap", "docker", "podman", "kubectl",
        "eslint", "prettier", "expect", "xterm", "exec", "command", "builtin", "eval", "source", "setarch", "i386", "x86_64",
        "linux32", "linux64", "sg", "ash", "rbash", "nano", "run-parts", "fakeroot", "xvfb-run", "valgrind",
    ]

    /// Whether `program` starts other programs: one of ``launchers``, or a versioned interpreter
    /// (`python3.12`, `perl5.36`, `php8.2`, `lua5.4`, `tclsh8.6`, `ruby3.1`, `pip3.11`, `node18`).
    /// A list cannot know every program: allow only what you would run yourself.
    func startsOthers(_ program: String) -> Bool {
        if launchers.contains(program) { return true }
        // A version after the name, or after a dash: python3.12, perl5.36.0, gcc-12, clang-15.
        let stem = program.prefix { !$0.isNumber && $0 != "." }
        let name = stem.hasSuffix("-") ? stem.dropLast() : stem
        let version = program.dropFirst(stem.count)
        return launchers.contains(String(name)) && !version.isEmpty && version.allSatisfy { $0.isNumber || $0 == "." }
    }

    /// The options refused by default: for the default programs, and for `sort`, which users
    /// often add back. (`tar` and `git` cannot be made safe by refusing options — old-style
    /// `tar xIf PROGRAM`, `git config core.fsmonitor` then `git status` — and are not listed.)
    public static let defaultRefusedOptions: [String: RefusedOptions] = [
        // Actions that run programs, delete, or write files.
        "find": RefusedOptions(words: ["-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"]),
        // Compiling a magic file writes one; looking inside compressed files starts decompressors.
        "file": RefusedOptions(words: ["--compile", "--uncompress", "--uncompress-noreport"], letters: ["C", "z", "Z"]),
        "sort": RefusedOptions(words: ["--compress-program", "--output", "--temporary-directory"], letters: ["o", "T"]),
        // Also often added back: they run a program named by an option.
        "split": RefusedOptions(words: ["--filter"]),
        "install": RefusedOptions(words: ["--strip-program"]),
    ]
}

/// Options of one program that `shell_run` refuses.
///
/// `words` are refused as whole arguments (`-exec`) and, when they are GNU long options, also as
/// `--name=value` and as the unambiguous abbreviations GNU programs accept (`--compress-prog`).
/// `letters` are refused anywhere in a cluster of short options (`-C` in `file -bC`). Every
/// argument is checked, after `--` too: `find -- . -exec …` still runs `-exec` (GNU find ends only
/// its leading options at `--`), and `--` can be another option's value (`file -F -- -C`). An
/// operand that merely looks like a refused option is refused as well; that is the safe mistake.
public struct RefusedOptions: Sendable, Hashable {
    public var words: Set<String>
    public var letters: Set<Character>

    public init(words: Set<String> = [], letters: Set<Character> = []) {
        self.words = words
        self.letters = letters
    }

    /// The first argument of `arguments` that is refused, if any.
    public func refused(in arguments: [String]) -> String? {
        for argument in arguments {
            if argument == "--" { continue }
            if words.contains(argument) { return argument }
            if argument.hasPrefix("--") {
                let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
                if name.count > 2, words.contains(where: { $0.hasPrefix("--") && $0.hasPrefix(name) }) { return argument }
            } else if argument.hasPrefix("-"), argument.count > 1, argument.dropFirst().contains(where: letters.contains) {
                return argument
            }
        }
        return nil
    }
}

/// `shell_run`: runs a program in the workspace and returns its exit status and output.
///
/// - An argv array, never a shell line unless the policy allows scripts; the program must be on
///   the policy's allowlist and is looked up in its search path only (not in the workspace).
/// - The working directory is inside the workspace; `HOME` is the workspace; the environment is
///   an allowlist (no API keys or tokens reach the child).
/// - The child runs in a process group of its own. When it exits, whatever it left running in
///   its group is killed; at the timeout the whole group gets SIGTERM, then SIGKILL.
/// - stdout and stderr are kept up to a cap each; the rest is counted and the truncation said.
///
/// Side-effecting: a command can change anything it can reach, so a call cut off by a crash is
/// never repeated by itself.
public struct ShellTool: Tool {
    public let workspace: Workspace
    public let policy: ShellPolicy
    public let name = "shell_run"
    public let effect = ToolEffect.sideEffecting

    public init(workspace: Workspace, policy: ShellPolicy = ShellPolicy()) {
        self.workspace = workspace
        self.policy = policy
    }

    public var description: String {
        "Run a program in the workspace and get its exit status, stdout and stderr. Give the program and its arguments "
            + "as an array (no shell). Allowed programs: \(policy.allowedExecutables.sorted().joined(separator: ", "))."
            + (policy.allowShellScripts ? " Or give script, a /bin/sh command line." : "")
    }

    public var parameters: JSONSchema {
        var properties: [JSONSchema.Property] = [
            .init("command", .array(of: .string("One argument."), "The program and its arguments, e.g. [\"ls\", \"-la\"].")),
            .init("cwd", .string("The working directory, relative to the workspace root (default: the root).")),
            .init(
                "timeoutSeconds",
                .number(
                    "Seconds before the command is killed (default \(Int(policy.defaultTimeout.seconds)), at most "
                        + "\(Int(policy.maxTimeout.seconds))).", minimum: 0.1, maximum: policy.maxTimeout.seconds)),
        ]
        if policy.allowShellScripts { properties.append(.init("script", .string("A /bin/sh command line, instead of command."))) }
        return .object(properties, required: policy.allowShellScripts ? [] : ["command"])
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        // A policy that asks for a sandbox and has none yet finds it now (a ShellTool built in
        // code): never runs unsandboxed by default.
        var policy = self.policy
        if policy.sandbox == nil, policy.sandboxMode != .none {
            do throws(TroupeError) {
                policy = try await policy.withSandbox()
            } catch {
                return .error(error.message)
            }
        }
        let argv: [String]
        let script: JSONValue? = arguments["script"] == .null ? Optional.none : arguments["script"]
        if let script {
            guard policy.allowShellScripts else { return .error("Shell scripts are not allowed here; give command as an array.") }
            guard let line = script.stringValue else { return .error("script must be text: a /bin/sh command line.") }
            argv = ["/bin/sh", "-c", line]
        } else {
            argv = arguments["command"]?.arrayValue?.compactMap(\.stringValue) ?? []
            guard let program = argv.first, !program.isEmpty else { return .error("Give command: the program and its arguments.") }
        }
        guard !argv.contains(where: { $0.contains("\0") }) else { return .error("An argument contains a NUL byte.") }
        let executable: String
        if script != nil {
            executable = "/bin/sh"
        } else {
            if policy.sandbox == nil, policy.allowedExecutables.contains(argv[0]), policy.startsOthers(argv[0]) {
                return .error(
                    "'\(argv[0])' starts other programs, and commands run without a sandbox here (tools.shell.sandbox: none), "
                        + "so it is refused: run the program you want directly.")
            }
            switch resolve(argv[0]) {
            case .success(let path): executable = path
            case .failure(let refusal): return .error(refusal.message)
            }
            if let option = policy.refusedOptions[argv[0]]?.refused(in: Array(argv.dropFirst())) {
                return .error(
                    "'\(argv[0]) \(option.prefix(80))' is refused: that option starts other programs, writes files or changes the "
                        + "system, which shell_run does not allow. Use the file tools to write files.")
            }
        }
        let directory = try workspace.resolve(arguments["cwd"]?.stringValue ?? ".")
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            return .error("The working directory '\(workspace.relative(directory))' does not exist.")
        }
        // Clamped as a number first: a Duration of 1e30 seconds does not exist (it traps).
        let timeout =
            arguments["timeoutSeconds"]?.doubleValue.flatMap { $0.isNaN ? nil : $0 }
            .map { Duration.seconds(min(max(0.1, $0), policy.maxTimeout.seconds)) } ?? policy.defaultTimeout
        let outcome: ProcessRun
        if var sandbox = policy.sandbox {
            // Troupe's own files (the workspace's git, direnv and hook files the sandbox adds).
            sandbox.protectedPaths += policy.protectedPaths
            do {
                outcome = try await sandbox.run(
                    executable, arguments: Array(argv.dropFirst()), workspace: workspace.root, directory: directory,
                    environment: environment(), timeout: timeout, maxOutputBytes: policy.maxOutputBytes)
            } catch let error as TroupeError where error.code == .toolFailed {
                return .error(error.message)  // the box is not built here: a workspace that would open the system, a protected link
            }
        } else {
            outcome = try await ProcessRun.run(
                executable: executable, arguments: Array(argv.dropFirst()), environment: environment(), directory: directory,
                timeout: timeout, maxOutputBytes: policy.maxOutputBytes)
        }
        return outcome.report(command: argv, timeout: timeout)
    }

    /// The children's environment: the allowed variables that are set, `PATH` and `HOME`.
    func environment() -> [String: String] {
        var variables = ProcessInfo.processInfo.environment.filter { policy.inheritedVariables.contains($0.key) }
        variables["PATH"] = policy.searchPath.joined(separator: ":")
        variables["HOME"] = workspace.root
        return variables
    }

    /// The allowed program's path in the search path.
    func resolve(_ program: String) -> Result<String, ToolRefusal> {
        guard !program.contains("/") else {
            return .failure(ToolRefusal(message: "Give the program by name (e.g. \"ls\"), not as a path: '\(program)' is refused."))
        }
        guard policy.allowedExecutables.contains(program) else {
            return .failure(
                ToolRefusal(
                    message:
                        "'\(program)' is not an allowed program. Allowed: \(policy.allowedExecutables.sorted().joined(separator: ", "))."))
        }
        for directory in policy.searchPath {
            let candidate = directory + "/" + program
            if access(candidate, X_OK) == 0 { return .success(candidate) }
        }
        return .failure(ToolRefusal(message: "'\(program)' is allowed but not installed here."))
    }
}

/// One run of a program: its output (capped), its end, and the clean-up of its process group.
public struct ProcessRun: Sendable {
    /// How the program ended.
    public enum End: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)
        /// It ran out its time, and it and everything it started were killed.
        case timedOut
    }

    public var end: End
    var stdout: CappedOutput
    var stderr: CappedOutput
    public var duration: Duration

    /// Its standard output, up to the cap (``standardOutputBytes`` says how much there was).
    public var standardOutput: String { stdout.text }
    public var standardError: String { stderr.text }
    /// How many bytes each stream had in all, kept or not.
    public var standardOutputBytes: Int { stdout.total }
    public var standardErrorBytes: Int { stderr.total }

    static func run(
        executable: String,
        arguments: [String],
        environment: [String: String],
        directory: String,
        timeout: Duration,
        maxOutputBytes: Int
    ) async throws -> ProcessRun {
        let options = {
            var options = PlatformOptions()
            options.processGroupID = 0  // a group of its own, so that all it starts can be killed together
            options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: .milliseconds(300))]
            return options
        }()
        var variables: [Environment.Key: String] = [:]
        for (name, value) in environment {
            if let key = Environment.Key(rawValue: name) { variables[key] = value }
        }
        let started = ContinuousClock.now
        let environment = variables
        let state = RunState()
        let result: ExecutionResult<(CappedOutput, CappedOutput), SequenceOutput, SequenceOutput>
        do {
            result = try await withThrowingTaskGroup(
                of: ExecutionResult<(CappedOutput, CappedOutput), SequenceOutput, SequenceOutput>?.self
            ) {
                tasks in
                tasks.addTask {
                    try await Subprocess.run(
                        .path(FilePath(executable)), arguments: Arguments(arguments), environment: .custom(environment),
                        workingDirectory: FilePath(directory), platformOptions: options, input: .none, output: .sequence,
                        error: .sequence
                    ) { execution in
                        let pid = execution.processIdentifier.value
                        state.group.store(pid, ordering: .relaxed)
                        // If this process dies now, the group dies with it (see ChildProcessGroups).
                        ChildProcessGroups.register(pid)
                        return try await drain(execution, pid: pid, maxOutputBytes: maxOutputBytes)
                    }
                }
                tasks.addTask {
                    try await Task.sleep(for: timeout)
                    state.timedOut.store(true, ordering: .relaxed)
                    // The program may still be starting: wait for its group, then end it.
                    while state.group.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
                    await terminateGroup(state.group.load(ordering: .relaxed))
                    return nil
                }
                defer { tasks.cancelAll() }
                while let next = try await tasks.next() {
                    if let finished = next { return finished }
                }
                throw CancellationError()
            }
        } catch let error as SubprocessError {
            endGroup(state.group.load(ordering: .relaxed))
            throw TroupeError(.toolFailed, "Could not run '\(executable)': \(error).")
        } catch {
            endGroup(state.group.load(ordering: .relaxed))
            throw error
        }
        // Whatever the program left running in its group goes with it.
        endGroup(state.group.load(ordering: .relaxed))
        let (stdout, stderr) = result.closureResult
        let end: End
        if state.timedOut.load(ordering: .relaxed) {
            end = .timedOut
        } else {
            switch result.terminationStatus {
            case .exited(let code): end = .exited(code)
            case .signaled(let signal): end = .signaled(signal)
            }
        }
        return ProcessRun(end: end, stdout: stdout, stderr: stderr, duration: started.duration(to: .now))
    }

    /// Kills what is left of the program's group and forgets it.
    private static func endGroup(_ pid: Int32) {
        guard pid > 0 else { return }
        kill(-pid, SIGKILL)
        ChildProcessGroups.unregister(pid)
    }

    /// Reads both streams at once (one could block the other); when the program itself has
    /// exited, its group gets a moment to finish and is then killed, so a background child that
    /// holds the pipes open cannot keep the call waiting.
    private static func drain(
        _ execution: Execution<NoInput, SequenceOutput, SequenceOutput>,
        pid: Int32,
        maxOutputBytes: Int
    ) async throws -> (CappedOutput, CappedOutput) {
        try await withThrowingTaskGroup(of: (stream: Int, output: CappedOutput)?.self) { tasks in
            tasks.addTask {
                var output = CappedOutput(cap: maxOutputBytes)
                for try await buffer in execution.standardOutput { output.add(buffer) }
                return (1, output)
            }
            tasks.addTask {
                var output = CappedOutput(cap: maxOutputBytes)
                for try await buffer in execution.standardError { output.add(buffer) }
                return (2, output)
            }
            tasks.addTask {
                while !hasExited(pid) { try await Task.sleep(for: .milliseconds(20)) }
                try await Task.sleep(for: .milliseconds(200))
                kill(-pid, SIGKILL)
                return nil
            }
            var streams: [Int: CappedOutput] = [:]
            while streams.count < 2, let next = try await tasks.next() {
                if let (stream, output) = next { streams[stream] = output }
            }
            tasks.cancelAll()
            return (streams[1] ?? CappedOutput(cap: maxOutputBytes), streams[2] ?? CappedOutput(cap: maxOutputBytes))
        }
    }

    /// Whether the process has exited, without reaping it (Subprocess reaps it); a process that
    /// is no longer our child has been reaped already.
    private static func hasExited(_ pid: Int32) -> Bool {
        var info = siginfo_t()
        let result = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
        // Already reaped (by Subprocess's own monitor): gone.
        if result == -1 && errno == ECHILD { return true }
        #if os(Linux)
            return result == 0 && info._sifields._sigchld.si_pid == pid
        #else
            return result == 0 && info.si_pid == pid
        #endif
    }

    /// SIGTERM to the group, then SIGKILL after a moment.
    private static func terminateGroup(_ pid: Int32) async {
        kill(-pid, SIGTERM)
        try? await Task.sleep(for: .milliseconds(200))
        kill(-pid, SIGKILL)
    }

    /// What a tool returns for this run: the end (status, signal or timeout) and both streams,
    /// with their truncation said; an error unless it exited with status 0.
    public func report(command: [String], timeout: Duration) -> ToolOutput {
        var lines: [String] = []
        let seconds = String(format: "%.1f", duration.seconds)
        switch end {
        case .exited(let code): lines.append("exit status \(code) (\(seconds) s)")
        case .signaled(let signal): lines.append("killed by signal \(signal) (\(seconds) s)")
        case .timedOut:
            lines.append("timed out after \(String(format: "%.0f", timeout.seconds)) s: the command and everything it started were killed")
        }
        for (name, stream) in [("stdout", stdout), ("stderr", stderr)] where stream.total > 0 {
            lines.append("--- \(name)\(stream.truncationNote)")
            lines.append(stream.text)
        }
        let failed: Bool
        if case .exited(0) = end { failed = false } else { failed = true }
        return ToolOutput(lines.joined(separator: "\n"), isError: failed)
    }
}

/// What the tasks of one run share: whether the timeout struck, and the process group.
private final class RunState: Sendable {
    let timedOut = Atomic(false)
    let group = Atomic<Int32>(0)
}

/// The first `cap` bytes of a stream, and how many there were in all.
struct CappedOutput: Sendable {
    let cap: Int
    var kept: [UInt8] = []
    var total = 0

    init(cap: Int) {
        self.cap = cap
    }

    mutating func add(_ buffer: SubprocessOutputSequence.Buffer) {
        total += buffer.count
        guard kept.count < cap else { return }
        buffer.withUnsafeBytes { bytes in kept.append(contentsOf: bytes.prefix(cap - kept.count)) }
    }

    var text: String { String(decoding: kept, as: UTF8.self) }

    var truncationNote: String {
        total > kept.count ? " (first \(kept.count) of \(total) bytes; the rest was dropped)" : ""
    }
}
