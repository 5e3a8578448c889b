import Foundation
import Subprocess
import Synchronization
import SystemPackage
public import TroupeCore

#if canImport(Glibc)
    import Glibc
#endif

/// Whether `shell_run` runs in a sandbox (`tools.shell.sandbox`).
public enum SandboxMode: String, Sendable, Hashable, Codable, CaseIterable {
    /// bubblewrap when it is installed and works here; otherwise `shell_run` is refused.
    case auto
    /// bubblewrap, or `shell_run` is refused (the same as `auto`, said explicitly).
    case bwrap
    /// No sandbox: commands run as Troupe's user, with everything that user may reach.
    case none
}

/// A bubblewrap (`bwrap`) sandbox for programs Troupe starts on a model's behalf.
///
/// Inside it:
/// - the workspace is the only writable path, bound at its own path (outputs name real paths),
///   plus any ``writablePaths``;
/// - `/usr` and the `/bin`, `/sbin` and `/lib*` beside it are read-only, as are ``readOnlyPaths``;
/// - `/etc` holds only what programs need to run (the loader cache, locale and time zone
///   settings, and `passwd`/`group` with the running user and `nobody` alone): no `shadow`, no
///   host secrets; there is no `/root` and no `/home`;
/// - `/tmp`, `/proc` and `/dev` are private, and the program has new user, PID, IPC, UTS, cgroup
///   and — unless ``network`` — network namespaces: no network at all, loopback included;
/// - the program dies with Troupe (`--die-with-parent`), and everything it started dies when it
///   ends (it is PID 1's child in its own PID namespace).
///
/// Use ``run(_:arguments:workspace:directory:environment:timeout:maxOutputBytes:)`` to run a
/// program in it, or ``wrap(_:arguments:workspace:directory:)`` for the argv of one you start.
public struct Sandbox: Sendable, Hashable {
    /// The `bwrap` program.
    public var bwrap: String
    /// Whether the program may use the network (the host's, shared).
    public var network: Bool
    /// More paths the program may read (bound read-only at their own paths, if they exist).
    public var readOnlyPaths: [String]
    /// More paths the program may write (bound at their own paths, if they exist).
    public var writablePaths: [String]
    /// Paths inside the workspace (or a writable path) that stay read-only in the sandbox: the
    /// file tools' protected paths that exist (`.git`, hooks, `.envrc`, the settings file, the store).
    public var protectedPaths: [String] = []
    /// The folder holding the sandbox's `passwd` and `group` (``prepare()`` writes them).
    public var identityDirectory: String
    /// Resource limits of each program run (set with util-linux's `prlimit` inside the sandbox).
    public var limits = ResourceLimits()

    /// Resource limits per program: a disk filler stops at ``fileBytes``, a runaway loop at
    /// ``cpuSeconds``, an allocation storm at ``addressSpaceBytes``, a fork bomb at ``processes``.
    ///
    /// The processes are counted by a `pids` control group of the program's own where this
    /// process may make one (root, or a delegated cgroup); otherwise by `RLIMIT_NPROC`, which
    /// counts all of the user's processes and which the kernel does not apply to root (then the
    /// PID namespace and the call's timeout end a fork bomb). ``processLimitDescription`` says which.
    public struct ResourceLimits: Sendable, Hashable {
        /// The largest file a program may write (`RLIMIT_FSIZE`): a bigger write gets `SIGXFSZ`.
        public var fileBytes: Int = 1 << 30
        /// The most memory a program may map (`RLIMIT_AS`).
        public var addressSpaceBytes: Int = 8 << 30
        /// The CPU time a program may use (`RLIMIT_CPU`); `nil`: the call's timeout.
        public var cpuSeconds: Int?
        /// The most files a program may have open (`RLIMIT_NOFILE`).
        public var openFiles: Int = 1024
        /// The most processes and threads a program and all it starts may have at once.
        public var processes: Int = 512

        public init(
            fileBytes: Int = 1 << 30, addressSpaceBytes: Int = 8 << 30, cpuSeconds: Int? = nil, openFiles: Int = 1024,
            processes: Int = 512
        ) {
            self.fileBytes = fileBytes
            self.addressSpaceBytes = addressSpaceBytes
            self.cpuSeconds = cpuSeconds
            self.openFiles = openFiles
            self.processes = processes
        }

        /// `prlimit`'s options for these limits (`RLIMIT_NPROC` only when no cgroup counts the processes).
        func options(countingProcesses: Bool) -> [String] {
            var options = ["--fsize=\(fileBytes)", "--as=\(addressSpaceBytes)", "--nofile=\(openFiles)"]
            if countingProcesses { options.append("--nproc=\(processes)") }
            if let cpuSeconds { options.append("--cpu=\(max(1, cpuSeconds))") }
            return options
        }
    }

    /// How ``ResourceLimits/processes`` is enforced here, for the line said at start.
    public var processLimitDescription: String {
        if ProcessCgroup.parent != nil { return "at most \(limits.processes) processes per command, by a pids cgroup" }
        if getuid() != 0 { return "at most \(limits.processes) processes of this user, by RLIMIT_NPROC" }
        return "no process limit: root without a writable pids cgroup, so the timeout ends a fork bomb"
    }

    /// util-linux's `prlimit`, which sets the limits inside the sandbox.
    static let prlimit: String? = ["/usr/bin/prlimit", "/bin/prlimit"].first { (path: String) in access(path, X_OK) == 0 }

    public init(
        bwrap: String = "/usr/bin/bwrap", network: Bool = false, readOnlyPaths: [String] = [], writablePaths: [String] = [],
        identityDirectory: String = Sandbox.defaultIdentityDirectory
    ) {
        self.bwrap = bwrap
        self.network = network
        self.readOnlyPaths = readOnlyPaths
        self.writablePaths = writablePaths
        self.identityDirectory = identityDirectory
    }

    /// A folder of this process's own for the sandbox's `passwd` and `group`: made once with a
    /// random name, mode 0700 and exclusively (`mkdtemp`), so that no other user can prepare it.
    public static let defaultIdentityDirectory: String = {
        var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("troupe-sandbox-XXXXXX").utf8CString)
        return template.withUnsafeMutableBufferPointer { buffer in
            mkdtemp(buffer.baseAddress!).map { String(cString: $0) } ?? "/nonexistent/troupe-sandbox"
        }
    }()

    /// Why a sandbox around `workspace` would not protect anything, if it would not: the
    /// workspace is bound writable over the sandbox, so `/`, a folder above `/etc`, `/usr` or
    /// the home folder, the home folder itself and `/tmp` are refused.
    public static func refusal(forWorkspace workspace: String) -> String? {
        guard let path = exposure(of: workspace, writable: true) else { return nil }
        return "The workspace '\(path)' would make the sandbox pointless (it would be writable over the system or a home "
            + "folder); give the run a folder of its own (--workspace DIR)."
    }

    /// `path` with its symbolic links resolved, if binding it into a sandbox would open what the
    /// sandbox is there to close, else `nil`. Refused to read: `/`, the shared `/tmp`, a system
    /// folder (`/etc`, `/usr`, `/var`, `/proc`, `/sys`, `/dev`, `/run`, `/boot`, `/bin`, `/lib`…), a
    /// home folder (any user's, `/root`, `/home`), a folder above any of them, and anything inside
    /// `/etc`, `/proc`, `/sys`, `/dev`, `/run` or `/var/run`. Refused to write as well: anything
    /// inside `/usr`, `/bin`, `/sbin`, `/lib*`, `/boot` or `/var/spool` (programs and jobs the host
    /// runs).
    public static func exposure(of path: String, writable: Bool) -> String? {
        let real = resolved(path)
        let folders = guardedFolders
        let closed = writable ? closedToWrite : closedToSee
        if real == "/" || sharedFolders.contains(real) || folders.contains(real) || folders.contains(where: { $0.hasPrefix(real + "/") })
            || (closed.contains(where: { real.hasPrefix($0 + "/") || (writable && real == $0 && !folders.contains($0)) })
                && !openToWrite.contains(where: { real.hasPrefix($0 + "/") }))
        {
            return real
        }
        return nil
    }

    // The folders ``exposure(of:writable:)`` compares with, resolved once (it runs for every
    // sandboxed command).
    private static let guardedFolders = systemFolders + homeFolders
    private static let sharedFolders = ["/tmp", "/var/tmp", "/dev/shm"].map(resolved)
    private static let closedToSee = ["/etc", "/proc", "/sys", "/dev", "/run", "/var/run"].map(resolved)
    /// Where programs (and a home's configuration) are read from, when it would be written.
    private static let closedToWrite =
        closedToSee
        + (["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/var/spool"]
        + homeFolders.flatMap { home in [".config", ".local", ".ssh", ".gnupg", ".bashrc.d", ".profile.d"].map { home + "/" + $0 } })
        .map(resolved)
    /// Source folders and removable media stay usable.
    private static let openToWrite = ["/usr/src", "/usr/local/src", "/run/media"].map(resolved)

    /// `path` as the kernel resolves it (`realpath`: links and `..` in order); for a path that
    /// does not exist, its deepest existing folder resolved and the rest as written.
    private static func resolved(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        if let pointer = realpath(absolute, nil) {
            defer { free(pointer) }
            return String(cString: pointer)
        }
        let parent = (absolute as NSString).deletingLastPathComponent
        guard parent != absolute, !parent.isEmpty else { return absolute }
        let joined = (resolved(parent) as NSString).appendingPathComponent((absolute as NSString).lastPathComponent)
        return URL(fileURLWithPath: joined).standardizedFileURL.path
    }

    private static let systemFolders = [
        "/etc", "/usr", "/var", "/proc", "/sys", "/dev", "/run", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
        "/srv", "/mnt", "/media",
    ].map(resolved)

    /// The home folders of this machine's users (read once), this process's `HOME`, `/root` and `/home`.
    private static let homeFolders: [String] = {
        var homes = ["/root", "/home", ProcessInfo.processInfo.environment["HOME"] ?? "/root"]
        setpwent()
        while let entry = getpwent() { homes.append(String(cString: entry.pointee.pw_dir)) }
        endpwent()
        return Set(
            homes.filter { $0.hasPrefix("/") && $0 != "/" && !["/nonexistent", "/bin", "/usr/sbin", "/dev/null"].contains($0) }.map(
                resolved)
        ).sorted()
    }()

    /// Files of `/etc` that programs need, bound read-only when the host has them.
    static let etcFiles = [
        "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/timezone", "/etc/locale.alias",
        "/etc/nsswitch.conf", "/etc/alternatives", "/etc/magic", "/etc/mime.types",
    ]

    /// Files of `/etc` for programs that use the network, bound only when ``network`` is on.
    /// (The certificates only: `/etc/ssl/private` holds the host's keys.)
    static let networkEtcFiles = [
        "/etc/resolv.conf", "/etc/hosts", "/etc/ssl/certs", "/etc/ssl/openssl.cnf", "/etc/ca-certificates", "/etc/gai.conf",
    ]

    /// The argv that runs `executable arguments` in the sandbox, in `directory` (inside
    /// `workspace`, which is bound writable; `nil`: no workspace, and `directory` must be one of
    /// the sandbox's own paths, such as `/tmp`). The program's processes are limited by
    /// `RLIMIT_NPROC` unless `processesCounted` (a ``ProcessCgroup`` counts them); ``run(_:arguments:workspace:directory:environment:timeout:maxOutputBytes:)``
    /// does all of that.
    func command(
        executable: String, arguments: [String], workspace: String?, directory: String, processesCounted: Bool = false,
        protection: SandboxProtection? = nil
    ) -> (executable: String, arguments: [String]) {
        // A user namespace always (never root on the host, even where bwrap would go on without
        // one), no capabilities (bwrap keeps them for root otherwise), no nested namespaces, and a
        // session of its own (no typing into Troupe's terminal: TIOCSTI). `--die-with-parent` ties
        // the sandbox to the thread that started it: swift-subprocess starts programs from one
        // thread of its own that lives as long as Troupe (not a pool thread that ends when idle).
        var options = [
            "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--new-session", "--die-with-parent", "--unshare-all",
        ]
        if network { options.append("--share-net") }
        options += ["--hostname", "troupe-sandbox"]
        options += ["--ro-bind", "/usr", "/usr"]
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: top) {
                options += ["--symlink", target, top]
            } else if FileManager.default.fileExists(atPath: top) {
                options += ["--ro-bind", top, top]
            }
        }
        options += ["--dir", "/etc"]
        for file in Self.etcFiles + (network ? Self.networkEtcFiles : []) {
            options += ["--ro-bind-try", file, file]
        }
        options += ["--ro-bind-try", identityDirectory + "/passwd", "/etc/passwd"]
        options += ["--ro-bind-try", identityDirectory + "/group", "/etc/group"]
        options += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/var/tmp"]
        // The paths it may reach beyond the system, parents before children (a bind hides what an
        // earlier one put below it), writable before read-only at the same depth; then the
        // protected paths inside the writable ones (read-only, or held by placeholders).
        var binds: [(source: String, destination: String, writable: Bool)] = []
        for path in writablePaths where FileManager.default.fileExists(atPath: path) { binds.append((path, path, true)) }
        if let workspace { binds.append((workspace, workspace, true)) }
        for path in readOnlyPaths where FileManager.default.fileExists(atPath: path) { binds.append((path, path, false)) }
        binds.sort {
            ($0.destination.split(separator: "/").count, $0.writable ? 0 : 1) < (
                $1.destination.split(separator: "/").count, $1.writable ? 0 : 1
            )
        }
        for bind in binds { options += [bind.writable ? "--bind" : "--ro-bind", bind.source, bind.destination] }
        for bind in protection?.binds ?? [] { options += ["--ro-bind", bind.source, bind.destination] }
        options += ["--chdir", directory]
        // (``detect(searchPath:network:)`` refuses a sandbox without prlimit.)
        let limited = Self.prlimit.map { [$0] + limits.options(countingProcesses: !processesCounted) + ["--"] } ?? []
        return (bwrap, options + ["--"] + limited + [executable] + arguments)
    }

    /// Runs `executable arguments` in this sandbox, in `directory` (default: the workspace root)
    /// of `workspace`, and returns how it ended and its output: for tools of your own that run
    /// programs, so that they need not build a sandbox again. ``ShellTool`` runs through it.
    ///
    /// The program gets only `environment`, ``limits`` (its CPU time at most `timeout`), and at
    /// most ``ResourceLimits/processes`` processes (``processLimitDescription``); at `timeout`
    /// it and everything it started are killed. Each of stdout and stderr is kept up to
    /// `maxOutputBytes`, the rest counted. A workspace that would open the system (``refusal(forWorkspace:)``)
    /// is refused with a `toolFailed` error.
    ///
    /// - Parameter executable: an absolute path that the sandbox shows (under `/usr`, or in
    ///   ``readOnlyPaths`` or the workspace).
    public func run(
        _ executable: String, arguments: [String] = [], workspace: String, directory: String? = nil,
        environment: [String: String] = ["PATH": "/usr/local/bin:/usr/bin:/bin"], timeout: Duration = .seconds(60),
        maxOutputBytes: Int = 64 << 10
    ) async throws -> ProcessRun {
        if let refusal = Self.refusal(forWorkspace: workspace) { throw TroupeError(.toolFailed, refusal) }
        var sandbox = self
        if sandbox.limits.cpuSeconds == nil { sandbox.limits.cpuSeconds = Int(timeout.seconds.rounded(.up)) }
        let command = try sandbox.wrap(executable, arguments: arguments, workspace: workspace, directory: directory ?? workspace)
        do {
            let result = try await ProcessRun.run(
                executable: command.executable, arguments: command.arguments, environment: environment, directory: workspace,
                timeout: timeout, maxOutputBytes: maxOutputBytes)
            // The program has exited and its PID namespace is gone with it: its group is empty or
            // about to be, and is removed after the answer (the wait for the kernel to let go of
            // it cost each call ~3 ms); its placeholders go before the answer.
            command.protection.end()
            Task { await command.cgroup?.remove() }
            return result
        } catch {
            await command.end()
            throw error
        }
    }

    /// `executable arguments` made ready to start in this sandbox, for code that starts and
    /// talks to the program itself (a long-lived server): the argv to start, and the control
    /// group that counts its processes, which ``SandboxedCommand/end()`` removes once it has
    /// exited.
    ///
    /// Throws when a protected path is a symbolic link: bwrap would follow it when it binds the
    /// path, so the box is not built (the message names the link to remove).
    public func wrap(_ executable: String, arguments: [String], workspace: String?, directory: String) throws(TroupeError)
        -> SandboxedCommand
    {
        let protection = try SandboxProtection.make(protectedPaths: protectedPaths, workspace: workspace, writablePaths: writablePaths)
        let cgroup = ProcessCgroup.make(maxProcesses: limits.processes)
        var command = self.command(
            executable: executable, arguments: arguments, workspace: workspace, directory: directory, processesCounted: cgroup != nil,
            protection: protection)
        if let cgroup { command = cgroup.joining(command) }
        return SandboxedCommand(
            executable: command.executable, arguments: command.arguments, cgroup: cgroup, protection: protection)
    }

    /// Whether the sandbox shows `path` (the system's programs and libraries, ``readOnlyPaths``,
    /// ``writablePaths``, `workspace`): where a program it runs must be, with the file its
    /// symbolic links lead to.
    public func shows(_ path: String, workspace: String? = nil) -> Bool {
        let shown =
            ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] + readOnlyPaths + writablePaths
            + [workspace].compactMap { $0 }
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        return [path, real].allSatisfy { path in shown.contains { path == $0 || path.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") } }
    }

    /// Writes the sandbox's `passwd` and `group`: the running user, `root` and `nobody` only,
    /// with homes that do not exist.
    public func prepare() throws(TroupeError) {
        let uid = getuid()
        let gid = getgid()
        let name = getpwuid(uid).map { String(cString: $0.pointee.pw_name) } ?? "troupe"
        var passwd = "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        var group = "root:x:0:\nnogroup:x:65534:\n"
        if uid != 0 && uid != 65534 { passwd += "\(name):x:\(uid):\(gid)::/nonexistent:/usr/sbin/nologin\n" }
        if gid != 0 && gid != 65534 { group += "\(name):x:\(gid):\n" }
        do {
            try FileManager.default.createDirectory(
                atPath: identityDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            // Only a folder of our own, that no one else can write in.
            var info = stat()
            guard lstat(identityDirectory, &info) == 0, info.st_uid == getuid(), info.st_mode & 0o077 == 0,
                info.st_mode & S_IFMT == S_IFDIR
            else {
                throw TroupeError(.configuration, "The sandbox's folder \(identityDirectory) is not this user's private folder.")
            }
            // Written only when missing or different: a sandbox starting meanwhile binds them.
            for (name, text) in [("passwd", passwd), ("group", group)] {
                let url = URL(fileURLWithPath: identityDirectory + "/" + name)
                if (try? Data(contentsOf: url)) != Data(text.utf8) { try Data(text.utf8).write(to: url, options: .atomic) }
            }
        } catch let error as TroupeError {
            throw error
        } catch {
            throw TroupeError(.configuration, "Cannot prepare the sandbox's files in \(identityDirectory): \(error.localizedDescription)")
        }
    }

    /// A sandbox whose `bwrap` is found in `searchPath` and can start a sandbox here (a kernel or
    /// container may forbid the namespaces it needs); else a `configuration` error that says why
    /// and how to install it.
    public static func detect(
        searchPath: [String] = ["/usr/local/bin", "/usr/bin", "/bin"], network: Bool = false
    ) async throws(TroupeError) -> Sandbox {
        guard let bwrap = searchPath.map({ $0 + "/bwrap" }).first(where: { access($0, X_OK) == 0 }) else {
            throw TroupeError(
                .configuration,
                "bubblewrap (bwrap) is not installed, so shell_run cannot run in a sandbox. Install it (Debian and Ubuntu: "
                    + "apt-get install bubblewrap; Fedora: dnf install bubblewrap), or run without a sandbox with "
                    + "tools.shell.sandbox: none.", details: ["reason": "noSandbox"])
        }
        guard prlimit != nil else {
            throw TroupeError(
                .configuration,
                "util-linux's prlimit (/usr/bin/prlimit) is not installed, so the sandbox could not limit what a command "
                    + "uses. Install util-linux, or run without a sandbox with tools.shell.sandbox: none.",
                details: ["reason": "noSandbox"])
        }
        let sandbox = Sandbox(bwrap: bwrap, network: network)
        try sandbox.prepare()
        let probe = sandbox.command(executable: "/usr/bin/true", arguments: [], workspace: nil, directory: "/tmp")
        let status: Int32
        do {
            let result = try await Subprocess.run(
                .path(FilePath(probe.executable)), arguments: Arguments(probe.arguments), output: .discarded, error: .string(limit: 4096))
            if case .exited(let code) = result.terminationStatus { status = code } else { status = -1 }
            guard status == 0 else {
                let reason = result.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
                if reason.contains("--disable-userns") || reason.contains("Unknown option") {
                    throw TroupeError(
                        .configuration,
                        "bubblewrap at \(bwrap) is too old for Troupe's sandbox (\(reason)): version 0.8 or later is needed (it can "
                            + "forbid nested user namespaces). Install a newer bubblewrap; turning the sandbox off is the last resort.",
                        details: ["reason": "noSandbox"])
                }
                throw TroupeError(
                    .configuration,
                    "bubblewrap is installed but cannot start a sandbox here (\(reason.isEmpty ? "exit \(status)" : reason)); "
                        + "the kernel or container may forbid user namespaces. Allow them, or use tools.shell.sandbox: none.",
                    details: ["reason": "noSandbox"])
            }
        } catch let error as TroupeError {
            throw error
        } catch {
            throw TroupeError(.configuration, "bubblewrap could not be started: \(error).", details: ["reason": "noSandbox"])
        }
        return sandbox
    }

    /// The sandbox of this process for `network`, detected once (``detect(searchPath:network:)``).
    public static func shared(network: Bool) async throws(TroupeError) -> Sandbox {
        try await detected.sandbox(network: network)
    }

    private static let detected = Detected()

    /// Sandboxes found, by `network`; a failure is tried again next time (it may be passing:
    /// no process left, bubblewrap installed since).
    private actor Detected {
        var found: [Bool: Sandbox] = [:]

        func sandbox(network: Bool) async throws(TroupeError) -> Sandbox {
            if let sandbox = found[network] {
                // Its files may have been cleaned away since (a /tmp cleaner): written again.
                if access(sandbox.identityDirectory + "/group", R_OK) != 0 { try sandbox.prepare() }
                return sandbox
            }
            let sandbox = try await Sandbox.detect(network: network)
            found[network] = sandbox
            return sandbox
        }
    }
}

/// A program made ready to start in a sandbox (``Sandbox/wrap(_:arguments:workspace:directory:)``).
public struct SandboxedCommand: Sendable {
    /// What to start: `bwrap` (or the `/bin/sh` that puts it in its control group first).
    public let executable: String
    public let arguments: [String]
    let cgroup: ProcessCgroup?
    /// The protected paths' binds, the hold on the workspace and its placeholders.
    let protection: SandboxProtection

    /// Ends the hold on the workspace (the last program there removes the placeholders) and
    /// removes the control group that counted the program's processes, killing any left: call
    /// it once the program has exited.
    public func end() async {
        protection.end()
        await cgroup?.remove()
    }
}

extension ShellPolicy {
    /// This policy with its sandbox found, as ``sandboxMode`` asks: `none` runs without one;
    /// `auto` and `bwrap` need bubblewrap, or the shell tool is refused with the reason and how to
    /// install it or opt out.
    public func withSandbox() async throws(TroupeError) -> ShellPolicy {
        var policy = self
        guard sandboxMode != .none else {
            policy.sandbox = nil
            return policy
        }
        do throws(TroupeError) {
            policy.sandbox = try await Sandbox.shared(network: network)
            policy.sandbox?.limits = limits
        } catch {
            throw TroupeError(
                .configuration,
                "shell_run runs only in a sandbox (tools.shell.sandbox: \(sandboxMode.rawValue)), and none can start: "
                    + error.message, details: ["reason": "noSandbox"])
        }
        return policy
    }

    /// How commands run, for a line at start: `sandboxed (bwrap, no network)`, or `NOT sandboxed`.
    public var sandboxDescription: String {
        guard let sandbox else {
            return "NOT sandboxed (tools.shell.sandbox: none): commands reach whatever this user can; programs that start "
                + "others are refused"
        }
        return "sandboxed (\(sandbox.bwrap), \(sandbox.network ? "with" : "no") network, \(sandbox.processLimitDescription))"
    }
}
