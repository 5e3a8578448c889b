import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A control group of the kernel's `pids` controller that caps how many processes (and threads)
/// one sandboxed program and everything it starts may have at once. Unlike `RLIMIT_NPROC` it
/// holds for root too, and it counts only the program's own processes, not all of its user's.
///
/// Each program gets a group of its own, `troupe-PID-N`, under this process's own `pids` group
/// (cgroup v1's `pids` hierarchy, or cgroup v2 where `pids` is delegated to this process's
/// children). The program joins it before `bwrap` starts (``joining(_:)``), so nothing it starts
/// escapes; ``remove()`` kills what is left and removes the group.
struct ProcessCgroup: Sendable {
    /// The group's folder.
    let path: String

    /// The folder in which this process may make groups with a `pids.max`, or `nil` (no
    /// writable `pids` controller: an unprivileged user without delegation, or a container
    /// without it). Found once; groups left by a Troupe that died are removed then.
    static let parent: String? = {
        guard let parent = candidates().first(where: isUsable) else { return nil }
        removeAbandoned(in: parent)
        return parent
    }()

    private static let counter = Atomic<Int>(0)
    private static let instance = String(UInt32.random(in: 0...UInt32.max), radix: 36)

    /// A new group that allows at most `maxProcesses` processes, or `nil` where there is none.
    static func make(maxProcesses: Int) -> ProcessCgroup? {
        guard let parent else { return nil }
        // The PID says whose it is (a Troupe that died leaves groups to remove); the random part
        // keeps a later process with the same PID (a restarted container) from colliding.
        let path = parent + "/troupe-\(getpid())-\(instance)-\(counter.add(1, ordering: .relaxed).newValue)"
        guard mkdir(path, 0o755) == 0 else { return nil }
        guard write("\(max(1, maxProcesses))", to: path + "/pids.max") else {
            rmdir(path)
            return nil
        }
        return ProcessCgroup(path: path)
    }

    /// `command` started by a `/bin/sh` that first moves itself into this group, then becomes
    /// the command (`exec`): the command and all it starts are in the group from their first
    /// instruction. The command's words are passed as `sh`'s arguments, never parsed by it.
    func joining(_ command: (executable: String, arguments: [String])) -> (executable: String, arguments: [String]) {
        (
            "/bin/sh",
            ["-c", "echo $$ > \"$1\" && shift && exec \"$@\"", "troupe-sandbox", path + "/cgroup.procs", command.executable]
                + command.arguments
        )
    }

    /// Kills whatever is left in the group and removes it (tried for up to about a second while
    /// its last processes exit: they usually have within a millisecond).
    func remove() async {
        var pause = Duration.microseconds(250)
        var waited = Duration.zero
        while waited < .seconds(1) {
            if rmdir(path) == 0 || errno == ENOENT { return }
            if !Self.write("1", to: path + "/cgroup.kill") {
                for pid in Self.processes(in: path) { kill(pid, SIGKILL) }
            }
            try? await Task.sleep(for: pause)
            waited += pause
            pause = min(pause * 2, .milliseconds(20))
        }
    }

    /// The processes in the group at `path`.
    static func processes(in path: String) -> [Int32] {
        ((try? String(contentsOfFile: path + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
    }

    /// The `pids` groups this process is in, as folders: cgroup v1's `pids` hierarchy, then
    /// cgroup v2's unified one (from `/proc/self/cgroup` and the mounts of `/proc/self/mountinfo`).
    static func candidates(
        cgroups: String? = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
        mounts: String? = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
    ) -> [String] {
        guard let cgroups, let mounts else { return [] }
        // mountinfo: ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTIONS
        // Spaces and the like in paths are written as octal escapes (`\040`).
        let mountLines = mounts.split(separator: "\n").map { $0.split(separator: " ").map { unescape(String($0)) } }
        func mount(v2: Bool) -> (root: String, point: String)? {
            for fields in mountLines {
                guard let dash = fields.firstIndex(of: "-"), dash >= 6, fields.count > dash + 3 else { continue }
                let type = fields[dash + 1]
                if v2 ? type == "cgroup2" : (type == "cgroup" && fields[dash + 3].split(separator: ",").contains("pids")) {
                    return (fields[3], fields[4])
                }
            }
            return nil
        }
        var found: [String] = []
        for line in cgroups.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 3 else { continue }
            let isV2 = fields[0] == "0" && fields[1].isEmpty
            guard isV2 || fields[1].split(separator: ",").contains("pids"), let mount = mount(v2: isV2) else { continue }
            // The group's path is relative to the hierarchy's root; the mount shows `mount.root` of it.
            var relative = fields[2]
            if mount.root != "/" {
                guard relative == mount.root || relative.hasPrefix(mount.root + "/") else { continue }
                relative = String(relative.dropFirst(mount.root.count))
            }
            let folder = (mount.point + relative).replacingOccurrences(of: "//", with: "/")
            if isV2 { found.append(folder) } else { found.insert(folder, at: 0) }
        }
        return found.map { $0.count > 1 && $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    /// A field of `/proc/self/mountinfo` with its octal escapes (`\040` for a space) decoded.
    static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        var rest = Substring(field).utf8[...]
        while let byte = rest.first {
            let digits = rest.dropFirst().prefix(3)
            if byte == UInt8(ascii: "\\"), digits.count == 3, digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "7")).contains($0) }) {
                bytes.append(digits.reduce(0) { $0 * 8 + ($1 - UInt8(ascii: "0")) })
                rest = rest.dropFirst(4)
            } else {
                bytes.append(byte)
                rest = rest.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether groups made in `folder` get a writable `pids.max` (tried with one).
    static func isUsable(_ folder: String) -> Bool {
        let probe = folder + "/troupe-probe-\(getpid())"
        guard mkdir(probe, 0o755) == 0 || errno == EEXIST else { return false }
        defer { rmdir(probe) }
        return write("max", to: probe + "/pids.max")
    }

    /// Removes the groups of Troupe processes that no longer exist (killing what is left in
    /// them), and those of an earlier process that had this one's PID.
    static func removeAbandoned(in folder: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] where name.hasPrefix("troupe-") {
            let parts = name.split(separator: "-").map(String.init)
            guard parts.count >= 3, let owner = Int32(parts[1]) else { continue }
            let earlierSelf = owner == getpid() && parts[2] != instance
            guard earlierSelf || (owner != getpid() && kill(owner, 0) == -1 && errno == ESRCH) else { continue }
            let path = folder + "/" + name
            for pid in processes(in: path) { kill(pid, SIGKILL) }
            rmdir(path)
        }
    }

    @discardableResult
    static func write(_ text: String, to path: String) -> Bool {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) } == bytes.count
    }
}
