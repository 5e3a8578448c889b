import Foundation
import Logging
import Synchronization
import TroupeCore
import TroupeStore

/// A driver's hold on its run: the lease (with its fencing token), its renewal, and the store
/// calls a driver makes, retried while the store is only unavailable for a moment.
///
/// The expiry a driver believes in is counted from when its renewal was *sent*, so it is never
/// later than the one the store recorded. Before a side effect the driver asks ``ensure(margin:)``:
/// a driver that was paused (SIGSTOP, a suspended VM) past its lease does not act on it.
final class LeaseKeeper: Sendable {
    let store: any RunStore
    let duration: TimeInterval
    let clock: any Clock<Duration>
    let now: @Sendable () -> Date
    let logger: Logger
    private let current: Mutex<Lease>

    init(
        lease: Lease, store: any RunStore, duration: TimeInterval, clock: any Clock<Duration>, now: @escaping @Sendable () -> Date,
        logger: Logger
    ) {
        self.current = Mutex(lease)
        self.store = store
        self.duration = duration
        self.clock = clock
        self.now = now
        self.logger = logger
    }

    /// The lease as last granted or renewed.
    var lease: Lease { current.withLock { $0 } }

    /// The least lease time left for a side effect to start: a third of the lease (10 s of 30).
    var margin: TimeInterval { duration / 3 }

    /// Extends the lease; throws `leaseHeld` if another driver took it, `storageUnavailable` if
    /// the store could not be reached before the lease ran out.
    func renew() async throws {
        let renewed = try await Self.retrying(
            "renew the lease", until: { [self] in lease.expiresAt }, clock: clock, now: now, logger: logger
        ) { [store, duration, now, lease] in
            try await store.renewLease(lease, until: now().addingTimeInterval(duration))
        }
        // A renewal that was sent earlier and answered later does not take back a later expiry.
        current.withLock { lease in lease.expiresAt = max(lease.expiresAt, renewed.expiresAt) }
    }

    /// Makes sure the lease has at least `margin` left, renewing it if not; throws `leaseHeld`
    /// when another driver took the run or too little is left, and `storageUnavailable` when
    /// the store could not be reached before the lease ran out.
    func ensure(margin: TimeInterval) async throws {
        if now().addingTimeInterval(margin) < lease.expiresAt { return }
        try await renew()
        let lease = self.lease
        guard now().addingTimeInterval(margin) < lease.expiresAt else {
            throw TroupeError(
                .leaseHeld,
                "The lease on run \(lease.runID) could not be kept (it ends at \(lease.expiresAt.formatted(.iso8601))); "
                    + "this driver stops before starting a side effect.",
                details: ["owner": lease.owner]
            )
        }
    }

    /// Runs a store call with the current lease, retrying `storageUnavailable` failures with
    /// backoff for as long as the lease has more than its margin left; other errors, and the last
    /// unavailable one, are thrown.
    func retrying<T>(_ what: String, _ body: (Lease) async throws -> T) async throws -> T {
        try await Self.retrying(
            what, until: { [self] in lease.expiresAt.addingTimeInterval(-margin) }, clock: clock, now: now, logger: logger
        ) {
            try await body(lease)
        }
    }

    /// Runs `body`, retrying `storageUnavailable` failures (a database locked by another process,
    /// a dropped connection) with backoff from 50 ms to 2 s until `deadline`.
    static func retrying<T>(
        _ what: String,
        until deadline: () -> Date,
        clock: any Clock<Duration>,
        now: () -> Date,
        logger: Logger,
        _ body: () async throws -> T
    ) async throws -> T {
        var delay = 0.05
        while true {
            do {
                return try await body()
            } catch let error as TroupeError where error.code == .storageUnavailable {
                guard now().addingTimeInterval(delay) < deadline() else { throw error }
                logger.warning("The store is unavailable; retrying", metadata: ["action": "\(what)", "error": "\(error.message)"])
                try await clock.sleep(for: .milliseconds(Int64(delay * 1000)))
                delay = min(delay * 2, 2)
            }
        }
    }
}
