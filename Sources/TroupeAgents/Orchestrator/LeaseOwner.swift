import Foundation

/// Who drives a run from a process: `host/pid/nonce/instance`, where the instance is the
/// machine's boot id, the process's PID namespace and its start time. It lets `resume` tell a
/// driver that is certainly dead (take over at once) from one that is alive (refuse) — and from
/// one it cannot judge (a container with its own PID namespace under the same host name, another
/// boot, an owner written by an older Troupe), whose lease it waits out instead.
public struct LeaseOwner: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var pid: Int32
    public var nonce: String
    /// `bootid-pidnamespace-starttime`, or `nil` when unknown.
    public var instance: String?

    /// Whether the process that wrote an owner is known to be alive, known to be dead, or neither.
    public enum Liveness: Sendable, Hashable {
        case alive
        case dead
        case unknown
    }

    public init(host: String, pid: Int32, nonce: String, instance: String?) {
        self.host = host
        self.pid = pid
        self.nonce = nonce
        self.instance = instance
    }

    /// This process, with a fresh nonce.
    public static func current() -> LeaseOwner {
        let pid = ProcessInfo.processInfo.processIdentifier
        return LeaseOwner(
            host: ProcessInfo.processInfo.hostName,
            pid: pid,
            nonce: String(UUID().uuidString.prefix(8)).lowercased(),
            instance: ProcessIdentity.instance(of: pid)
        )
    }

    /// Reads an owner written by ``description``; `nil` for other text (an owner that is not a
    /// Troupe process, such as a test's).
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3 || parts.count == 4, let pid = Int32(parts[1]) else { return nil }
        self.init(host: String(parts[0]), pid: pid, nonce: String(parts[2]), instance: parts.count == 4 ? String(parts[3]) : nil)
    }

    public var description: String {
        "\(host)/\(pid)/\(nonce)" + (instance.map { "/\($0)" } ?? "")
    }

    /// Whether the owner's process is alive, judged from this process: only an owner of this
    /// machine's current boot, in this PID namespace, is judged at all; a PID now used by another
    /// process (its start time differs) counts as dead.
    public var liveness: Liveness {
        let me = ProcessInfo.processInfo.processIdentifier
        guard host == ProcessInfo.processInfo.hostName, pid > 0, let instance else { return .unknown }
        guard let here = ProcessIdentity.instance(of: me), Self.scope(of: here) == Self.scope(of: instance) else { return .unknown }
        if pid == me { return .alive }
        guard let now = ProcessIdentity.instance(of: pid) else {
            // No such process (its /proc entry is gone): dead. Anything else is a reason to doubt.
            return kill(pid, 0) == -1 && errno == ESRCH ? .dead : .unknown
        }
        return now == instance ? .alive : .dead
    }

    /// The boot and PID namespace part of an instance.
    private static func scope(of instance: String) -> Substring {
        instance.split(separator: "-").dropLast().joined(separator: "-")[...]
    }
}

/// What identifies a process beyond its PID, read from Linux's `/proc`.
enum ProcessIdentity {
    /// `bootid-pidnamespace-starttime` of `pid`, or `nil` where `/proc` does not tell (not Linux,
    /// no such process).
    static func instance(of pid: Int32) -> String? {
        guard let boot = bootID, let namespace = pidNamespace, let start = startTime(of: pid) else { return nil }
        return "\(boot)-\(namespace)-\(start)"
    }

    /// The first 12 hex digits of this boot's id: another boot gives another id.
    static let bootID: String? = {
        guard let text = try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8) else { return nil }
        let hex = text.filter(\.isHexDigit)
        return hex.isEmpty ? nil : String(hex.prefix(12)).lowercased()
    }()

    /// The inode number of this process's PID namespace (`pid:[4026531836]`).
    static let pidNamespace: String? = {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/pid") else { return nil }
        let digits = target.filter(\.isNumber)
        return digits.isEmpty ? nil : digits
    }()

    /// The process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
    static func startTime(of pid: Int32) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the command name (which may hold spaces and parentheses) start at 3.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return String(fields[19])
    }
}
