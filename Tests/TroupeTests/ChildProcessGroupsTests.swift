import Foundation
import Testing
import TroupeCore

/// The guardian that takes the tools' programs with it when Troupe dies (SIGKILL included; the
/// end-to-end case is in CrashResumeTests).
@Suite struct ChildProcessGroupsTests {
    @Test func theGuardianStartsWithTheFirstGroupAndStaysAlive() throws {
        ChildProcessGroups.register(999_999)
        defer { ChildProcessGroups.unregister(999_999) }
        #expect(ChildProcessGroups.running.contains(999_999))
        let guardian = ChildProcessGroups.guardianPID
        #expect(guardian > 0)
        let stat = try String(contentsOfFile: "/proc/\(guardian)/stat", encoding: .utf8)
        #expect(!stat.contains(") Z"), "the guardian is a zombie: \(stat)")
    }

    /// `sleep 60` in a process group of its own, as the tools start their programs.
    private func groupLeader() throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        var pid: pid_t = 0
        let arguments: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("60"), nil]
        defer { for argument in arguments { free(argument) } }
        guard posix_spawn(&pid, "/bin/sleep", nil, &attributes, arguments, nil) == 0 else {
            throw CLIError(message: "cannot start sleep")
        }
        return pid
    }

    /// Waits for `pid` to end; the signal that killed it, or 0.
    private func signalThatEnded(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return status & 0x7F
    }

    @Test func whenItsInputEndsTheGuardianKillsTheGroupsStillRegistered() throws {
        let registered = try groupLeader()
        let ended = try groupLeader()
        defer {
            kill(ended, SIGKILL)
            _ = signalThatEnded(ended)
        }
        let input = Pipe()
        let guardian = Process()
        guardian.executableURL = URL(fileURLWithPath: "/bin/sh")
        guardian.arguments = ["-c", ChildProcessGroups.guardianScript, "troupe-guardian"]
        guardian.standardInput = input
        try guardian.run()
        input.fileHandleForWriting.write(Data("+\(registered)\n+\(ended)\n-\(ended)\n".utf8))
        // What the kernel does when the process that holds the other end dies.
        try input.fileHandleForWriting.close()
        guardian.waitUntilExit()
        #expect(signalThatEnded(registered) == SIGKILL)
        #expect(kill(ended, 0) == 0, "a group that ended (and was unregistered) is left alone")
    }
}
