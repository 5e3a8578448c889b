import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The process groups of the stdio MCP servers this process is running, so that a process about
/// to exit at once (on Ctrl-C) can take them with it.
public enum MCPProcesses {
    private static let groups = Mutex<Set<Int32>>([])

    static func started(_ pid: Int32) {
        groups.withLock { _ = $0.insert(pid) }
    }

    static func ended(_ pid: Int32) {
        groups.withLock { _ = $0.remove(pid) }
    }

    /// The process IDs (which are also their group IDs) of the running servers.
    public static var running: Set<Int32> { groups.withLock { $0 } }

    /// Kills every running server's process group. Safe to call from a signal handler's queue.
    public static func killAll() {
        for pid in running { kill(-pid, SIGKILL) }
    }
}
