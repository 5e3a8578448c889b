import CTroupeSystem
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The process groups of the programs this process started for tools (`shell_run` commands, stdio
/// MCP servers), so that they die with it — however it dies.
///
/// Each program runs in a process group of its own, which the tool kills when the program ends, at
/// a timeout, or when the call is cancelled. Those paths need this process to be alive. For the
/// others:
/// - **Ctrl-C, SIGTERM**: the CLI's signal handler calls ``killAll()`` before it exits.
/// - **SIGKILL, a crash**: a *guardian* — a small `/bin/sh` started with the first group, in a
///   process group of its own, ignoring terminal signals — is told of every group as it starts
///   and ends, through a pipe only this process can write. When this process dies, however it
///   dies, the kernel closes the pipe; the guardian reads its end and kills every group still
///   registered, then exits.
///
/// What is not covered: a program that leaves its process group (`setsid`, a daemon) is not
/// found; and a program started in the moment between its spawn and its registration (a few
/// microseconds) escapes a SIGKILL of this process that falls in that moment.
package enum ChildProcessGroups {
    private struct State {
        var groups: Set<Int32> = []
        var guardian: pid_t = 0
        var pipe: Int32 = -1
    }

    private static let state = Mutex(State())

    /// Tells the guardian (started if needed) about a new process group, by its leader's PID.
    package static func register(_ group: Int32) {
        guard group > 0 else { return }
        state.withLock { state in
            state.groups.insert(group)
            send("+\(group)\n", in: &state)
        }
    }

    /// Forgets a process group that ended (its leader exited and the group was killed).
    package static func unregister(_ group: Int32) {
        state.withLock { state in
            guard state.groups.remove(group) != nil else { return }
            send("-\(group)\n", in: &state)
        }
    }

    /// The registered groups (their leaders' PIDs).
    package static var running: Set<Int32> { state.withLock { $0.groups } }

    /// The guardian's PID, or 0 before the first group.
    package static var guardianPID: Int32 { state.withLock { $0.guardian } }

    /// Kills every registered group at once. Safe to call from a signal handler's queue.
    package static func killAll() {
        for group in running { kill(-group, SIGKILL) }
    }

    /// Writes a line to the guardian; a guardian that is gone (killed by someone) is replaced,
    /// and told every group.
    private static func send(_ line: String, in state: inout State) {
        if state.pipe >= 0, writeLine(line, to: state.pipe) { return }
        startGuardian(&state)
        guard state.pipe >= 0 else { return }
        for group in state.groups { _ = writeLine("+\(group)\n", to: state.pipe) }
    }

    private static func writeLine(_ line: String, to descriptor: Int32) -> Bool {
        var bytes = Array(line.utf8)
        let count = bytes.count
        // A line is shorter than PIPE_BUF, so the write is atomic: it is all written or fails.
        return bytes.withUnsafeMutableBytes { buffer in
            while true {
                let written = write(descriptor, buffer.baseAddress, count)
                if written == count { return true }
                if written < 0 && errno == EINTR { continue }
                return false
            }
        }
    }

    /// Reads `+PID` and `-PID` lines until its input ends, then kills what is left. Ignores the
    /// terminal's signals (it is also in a process group of its own): only the end of the pipe,
    /// when the process that started it is gone, ends it.
    package static let guardianScript = """
        trap '' INT TERM HUP QUIT PIPE
        groups=' '
        while IFS= read -r line; do
            case "$line" in
                +*) groups="$groups${line#+} " ;;
                -*) g=${line#-}; case "$groups" in *" $g "*) groups="${groups%% $g *} ${groups#* $g }" ;; esac ;;
            esac
        done
        for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
        """

    private static func startGuardian(_ state: inout State) {
        if state.pipe >= 0 { close(state.pipe) }
        if state.guardian > 0 {
            var status: Int32 = 0
            waitpid(state.guardian, &status, WNOHANG)
        }
        state.pipe = -1
        state.guardian = 0
        // Writes to a guardian that died must fail with EPIPE, not kill this process.
        signal(SIGPIPE, SIG_IGN)

        var descriptors: [Int32] = [-1, -1]
        guard pipe(&descriptors) == 0 else { return }
        let (readEnd, writeEnd) = (descriptors[0], descriptors[1])
        defer { close(readEnd) }
        // Neither end may leak into other children: one holding the write end would keep the
        // guardian from ever seeing the end of its input. (`pipe2` is not visible to Swift here;
        // a fork on another thread in this instant, once per process, is the only window.)
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, readEnd, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // Nothing else of this process's: a pipe end it held (one without close-on-exec, such as
        // Foundation's Pipe makes) would never see its end while the guardian lives.
        _ = troupe_spawn_close_from(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK))

        var pid: pid_t = 0
        let arguments = ["/bin/sh", "-c", guardianScript, "troupe-guardian"]
        let cArguments = arguments.map { strdup($0) } + [nil]
        defer { for argument in cArguments { free(argument) } }
        let environment: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), nil]
        defer { for variable in environment { free(variable) } }
        guard posix_spawn(&pid, "/bin/sh", &actions, &attributes, cArguments, environment) == 0 else {
            close(writeEnd)
            return
        }
        state.guardian = pid
        state.pipe = writeEnd
    }
}
