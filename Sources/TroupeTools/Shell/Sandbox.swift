import Foundation
import Subprocess
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
/// Use ``command(executable:arguments:workspace:directory:)`` to wrap a program's argv.
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
    /// ``cpuSeconds``, an allocation storm at ``addressSpaceBytes``. ``processes`` stops a fork
    /// bomb only when Troupe does not run as root (the kernel exempts root's processes); as root
    /// the PID namespace and the call's timeout end it.
    public struct ResourceLimits: Sendable, Hashable {
        public var fileBytes: Int = 1 << 30
        public var addressSpaceBytes: Int = 8 << 30
        public var cpuSeconds: Int?
        public var openFiles: Int = 1024
        public var processes: Int = 512

        public init() {}

        /// `prlimit`'s options for these limits.
        var options: [String] {
            var options = [
                "--fsize=\(fileBytes)", "--as=\(addressSpaceBytes)", "--nofile=\(openFiles)", "--nproc=\(processes)",
            ]
            if let cpuSeconds { options.append("--cpu=\(max(1, cpuSeconds))") }
            return options
        }
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
        let home = ProcessInfo.processInfo.environment["HOME"].map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        let path = URL(fileURLWithPath: workspace).standardizedFileURL.path
        let guarded = ["/etc", "/usr", "/var", "/root", "/home", "/proc"] + [home].compactMap { $0 }
        let exact = ["/", "/tmp", "/var/tmp", "/dev/shm"] + [home].compactMap { $0 }
        if exact.contains(path) || guarded.contains(path) || guarded.contains(where: { $0.hasPrefix(path == "/" ? "/" : path + "/") }) {
            return "The workspace '\(path)' would make the sandbox pointless (it would be writable over the system or the home "
                + "folder); give the run a folder of its own (--workspace DIR)."
        }
        return nil
    }

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

    /// The argv that runs `executable arguments` in the sandbox, in `directory` (inside `workspace`).
    public func command(executable: String, arguments: [String], workspace: String, directory: String) -> (
        executable: String, arguments: [String]
    ) {
        // A user namespace always (never root on the host, even where bwrap would go on without
        // one), no capabilities (bwrap keeps them for root otherwise), no nested namespaces, and a
        // session of its own (no typing into Troupe's terminal: TIOCSTI).
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
        // Writable paths, then the workspace, then what stays read-only inside them (later binds win).
        for path in writablePaths where FileManager.default.fileExists(atPath: path) { options += ["--bind", path, path] }
        options += ["--bind", workspace, workspace]
        // Protected paths only where they would be writable (never exposing one from elsewhere).
        let writable = [workspace] + writablePaths
        let overlays = protectedPaths.filter { path in writable.contains { path.hasPrefix($0 + "/") } }
        for path in readOnlyPaths + overlays where FileManager.default.fileExists(atPath: path) { options += ["--ro-bind", path, path] }
        options += ["--chdir", directory]
        let limited = Self.prlimit.map { [$0] + limits.options + ["--"] } ?? []
        return (bwrap, options + ["--"] + limited + [executable] + arguments)
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
            try Data(passwd.utf8).write(to: URL(fileURLWithPath: identityDirectory + "/passwd"), options: .atomic)
            try Data(group.utf8).write(to: URL(fileURLWithPath: identityDirectory + "/group"), options: .atomic)
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
        let sandbox = Sandbox(bwrap: bwrap, network: network)
        try sandbox.prepare()
        let probe = sandbox.command(executable: "/usr/bin/true", arguments: [], workspace: "/tmp", directory: "/tmp")
        let status: Int32
        do {
            let result = try await Subprocess.run(
                .path(FilePath(probe.executable)), arguments: Arguments(probe.arguments), output: .discarded, error: .string(limit: 4096))
            if case .exited(let code) = result.terminationStatus { status = code } else { status = -1 }
            guard status == 0 else {
                throw TroupeError(
                    .configuration,
                    "bubblewrap is installed but cannot start a sandbox here (\(result.standardError ?? "exit \(status)")); "
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
                if access(sandbox.identityDirectory + "/passwd", R_OK) != 0 { try sandbox.prepare() }
                return sandbox
            }
            let sandbox = try await Sandbox.detect(network: network)
            found[network] = sandbox
            return sandbox
        }
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
        guard let sandbox else { return "NOT sandboxed (tools.shell.sandbox: none): commands reach whatever this user can" }
        return "sandboxed (\(sandbox.bwrap), \(sandbox.network ? "with" : "no") network)"
    }
}
