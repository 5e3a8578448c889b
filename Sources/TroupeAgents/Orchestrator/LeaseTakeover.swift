public import Foundation
public import TroupeStore
public import TroupeCore

/// Takes a run over from a driver that is gone, and refuses while a live one holds it.
///
/// `body` is the drive; its argument is the lease to take over, if any. A driver known to be dead
/// (``LeaseOwner/liveness``) is taken over at once — its lease exactly, by token, so that of two
/// processes that judged it dead only the first takes the run. One that is alive is refused. One
/// that cannot be judged (another machine, another PID namespace, an owner that is not a Troupe
/// process) has its lease waited out, and the run is then taken only if its lease expired: if the
/// driver renewed it meanwhile, it is alive, and the store refuses the takeover.
public struct LeaseTakeover: Sendable {
    public var store: any RunStore
    public var runID: RunID
    public var clock: any Clock<Duration>
    public var now: @Sendable () -> Date
    /// Told what the takeover does (taking over, waiting), for a person watching.
    public var report: @Sendable (String) -> Void

    public init(
        store: any RunStore,
        runID: RunID,
        clock: any Clock<Duration> = ContinuousClock(),
        now: @escaping @Sendable () -> Date = { Date() },
        report: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.store = store
        self.runID = runID
        self.clock = clock
        self.now = now
        self.report = report
    }

    public func drive(_ body: (_ replacing: Lease?) async throws -> RunStateMachine) async throws -> RunStateMachine {
        do {
            return try await body(nil)
        } catch let error as TroupeError where error.code == .leaseHeld {
            guard let lease = try await store.lease(of: runID) else { return try await body(nil) }
            let owner = LeaseOwner(parsing: lease.owner)
            switch owner?.liveness ?? .unknown {
            case .dead:
                report("the process that drove this run (pid \(owner?.pid ?? 0)) is gone; taking over")
                return try await body(lease)
            case .alive:
                throw error
            case .unknown:
                let wait = max(0, lease.expiresAt.timeIntervalSince(now())) + 0.5
                report("run held by \(lease.owner); waiting up to \(Int(wait.rounded(.up))) s for its lease to expire")
                try await clock.sleep(for: .milliseconds(Int64(wait * 1000)))
                return try await body(nil)
            }
        }
    }
}
