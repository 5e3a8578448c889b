public import Foundation
public import Logging
import Synchronization
public import TroupeCore
public import TroupeStore

/// What a worker needs to drive one claimed run: the model and tools its configuration names.
public struct RunEquipment: Sendable {
    public var model: any ChatModel
    public var tools: ToolRegistry
    /// A changed configuration to journal as the drive begins (its tool rules, say), if any.
    public var configuration: RunConfiguration?

    public init(model: any ChatModel, tools: ToolRegistry, configuration: RunConfiguration? = nil) {
        self.model = model
        self.tools = tools
        self.configuration = configuration
    }
}

/// Claims runnable runs from a store — pending, running with an expired lease, handed back by a
/// draining worker — and drives each with a ``RunDriver``, up to ``concurrency`` at once.
///
/// A worker wakes when the store announces a claimable run (``RunStore/announcements()``: in
/// this process, or from any process with PostgreSQL's `NOTIFY`), when one of its drives ends,
/// and every ``pollInterval`` in any case, so a lost announcement only delays a run.
///
/// Fencing is the driver's: a worker paused past its lease (a frozen VM, SIGSTOP) finds on waking
/// that its appends are refused with `leaseHeld`, logs that the run was taken over, and goes on
/// with other runs. A run whose drive failed is released with a back-off and, after
/// ``maxAttempts`` failed claims in a row, left for an operator's `troupe resume`.
///
/// Graceful drain: once the ``DrainSignal`` begins, the worker claims nothing more and its
/// drivers launch nothing new; a run whose activities in flight have finished is handed back at
/// once (its lease released clean, so another worker takes it over without waiting), and after
/// ``drainTimeout`` the drives still going are cancelled, which releases their leases too.
public struct RunWorker: Sendable {
    public var store: any RunStore
    /// Who is driving, as recorded in the leases (``LeaseOwner`` for the CLI).
    public var owner: String
    /// The most runs driven at once.
    public var concurrency: Int
    public var leaseDuration: Duration
    /// How often to look for claimable runs without an announcement.
    public var pollInterval: Duration
    /// Failed claims in a row after which a run is left for an operator.
    public var maxAttempts: Int
    /// Runs of a tenant driven at once across every worker of the store, by tenant; tenants not
    /// named take ``defaultMaxConcurrentRuns`` (no limit when `nil`). See ``ClaimRules``.
    public var maxConcurrentRuns: [String: Int] = [:]
    public var defaultMaxConcurrentRuns: Int?
    /// How long a drain waits for the drives in hand to reach a point where nothing is in flight.
    public var drainTimeout: Duration
    /// How often the worker applies the default decision of approval requests whose time ran out
    /// (``RunStore/applyApprovalTimeouts(owner:limit:at:)``); `nil`: never.
    public var approvalTimeoutSweep: Duration? = .seconds(15)
    public var clock: any Clock<Duration>
    public var now: @Sendable () -> Date
    public var logger: Logger
    /// The model and tools for a claimed run; a failure releases the run with a back-off.
    public var equip: @Sendable (RunSummary) async throws -> RunEquipment
    /// Called after each event a drive journals, with the state it led to.
    public var observer: (@Sendable (RunEvent, RunStateMachine) -> Void)?

    public init(
        store: any RunStore,
        owner: String,
        concurrency: Int = 8,
        leaseDuration: Duration = .seconds(30),
        pollInterval: Duration = .seconds(5),
        maxAttempts: Int = 5,
        drainTimeout: Duration = .seconds(30),
        clock: any Clock<Duration> = ContinuousClock(),
        now: @escaping @Sendable () -> Date = { Date() },
        logger: Logger = Logger(label: "troupe.worker"),
        observer: (@Sendable (RunEvent, RunStateMachine) -> Void)? = nil,
        equip: @escaping @Sendable (RunSummary) async throws -> RunEquipment
    ) {
        self.store = store
        self.owner = owner
        self.concurrency = concurrency
        self.leaseDuration = leaseDuration
        self.pollInterval = pollInterval
        self.maxAttempts = maxAttempts
        self.drainTimeout = drainTimeout
        self.clock = clock
        self.now = now
        self.logger = logger
        self.observer = observer
        self.equip = equip
    }

    /// What a worker did, for its log and its tests.
    public struct Tally: Sendable, Hashable {
        /// Runs claimed.
        public var claimed = 0
        /// Drives that ended with the run ended, parked for an operator, or waiting for a person's approval.
        public var finished = 0
        /// Drives that handed their run back on a drain.
        public var handedBack = 0
        /// Drives cancelled at the drain timeout (their leases released).
        public var cancelled = 0
        /// Drives stopped because another driver took the run over.
        public var lostLeases = 0
        /// Drives that failed (released with a back-off).
        public var failed = 0
    }

    private enum Wake: Sendable {
        case look
        case drainTimedOut
    }

    /// Claims and drives runs until `drain` begins, then drains (see the type's documentation)
    /// and returns once no drive is left.
    @discardableResult
    public func run(until drain: DrainSignal) async -> Tally {
        let (wakes, wake) = AsyncStream.makeStream(of: Wake.self, bufferingPolicy: .bufferingNewest(4))
        let state = WorkerState()
        logger.info(
            "worker started", metadata: ["owner": "\(owner)", "concurrency": "\(concurrency)", "maxAttempts": "\(maxAttempts)"])
        // Listening before the first look: a run announced in between is not missed.
        let announcements = store.announcements()
        await withDiscardingTaskGroup { helpers in
            helpers.addTask {
                for await _ in announcements { wake.yield(.look) }
            }
            helpers.addTask { [clock, pollInterval] in
                while (try? await clock.sleep(for: pollInterval)) != nil { wake.yield(.look) }
            }
            if let sweep = approvalTimeoutSweep {
                helpers.addTask { [clock, store, owner, now, logger] in
                    while (try? await clock.sleep(for: sweep)) != nil, !drain.isDraining {
                        do {
                            let decided = try await store.applyApprovalTimeouts(owner: owner, at: now)
                            if !decided.isEmpty {
                                logger.info("approval requests timed out: their default decisions apply", metadata: ["runs": "\(decided)"])
                                wake.yield(.look)
                            }
                        } catch {
                            logger.warning(
                                "cannot apply approval timeouts for now", metadata: ["error": "\(TroupeError.wrap(error).message)"])
                        }
                    }
                }
            }
            helpers.addTask { [clock, drainTimeout] in
                await drain.wait()
                guard !Task.isCancelled else { return }
                wake.yield(.look)
                if (try? await clock.sleep(for: drainTimeout)) != nil { wake.yield(.drainTimedOut) }
            }
            await withDiscardingTaskGroup { drives in
                var cancelled = false
                wake.yield(.look)
                for await reason in wakes {
                    if drain.isDraining {
                        if state.active.load(ordering: .acquiring) == 0 { break }
                        if reason == .drainTimedOut && !cancelled {
                            cancelled = true
                            logger.warning(
                                "drain timeout: cancelling the drives still going (their leases are released)",
                                metadata: ["drives": "\(state.active.load(ordering: .acquiring))"])
                            drives.cancelAll()
                        }
                        continue
                    }
                    while state.active.load(ordering: .acquiring) < concurrency, !drain.isDraining, let claimed = await claim() {
                        state.active.add(1, ordering: .acquiringAndReleasing)
                        state.tally.withLock { $0.claimed += 1 }
                        drives.addTask {
                            let outcome = await drive(claimed, drain: drain)
                            state.tally.withLock { tally in
                                switch outcome {
                                case .finished: tally.finished += 1
                                case .handedBack: tally.handedBack += 1
                                case .cancelled: tally.cancelled += 1
                                case .lostLease: tally.lostLeases += 1
                                case .failed: tally.failed += 1
                                }
                            }
                            state.active.subtract(1, ordering: .acquiringAndReleasing)
                            wake.yield(.look)
                        }
                    }
                }
            }
            helpers.cancelAll()
        }
        wake.finish()
        let result = state.tally.withLock { $0 }
        logger.info(
            "worker stopped",
            metadata: [
                "claimed": "\(result.claimed)", "finished": "\(result.finished)", "handedBack": "\(result.handedBack)",
                "cancelled": "\(result.cancelled)", "lostLeases": "\(result.lostLeases)", "failed": "\(result.failed)",
            ])
        return result
    }

    /// The next claimable run, leased to this worker; `nil` when there is none or the store
    /// cannot be reached for now (the next wake tries again).
    private func claim() async -> LeasedRun? {
        do {
            return try await store.claimNextRun(
                owner: owner, until: now().addingTimeInterval(leaseDuration.seconds),
                rules: ClaimRules(
                    maxAttempts: maxAttempts, maxConcurrentRuns: maxConcurrentRuns, defaultMaxConcurrentRuns: defaultMaxConcurrentRuns),
                at: now())
        } catch {
            logger.warning("cannot claim runs for now", metadata: ["error": "\(TroupeError.wrap(error).message)"])
            return nil
        }
    }

    /// The worker's counts, shared with its drives.
    private final class WorkerState: Sendable {
        let tally = Mutex(Tally())
        let active = Atomic<Int>(0)
    }

    private enum DriveOutcome {
        case finished, handedBack, cancelled, lostLease, failed
    }

    private func drive(_ claimed: LeasedRun, drain: DrainSignal) async -> DriveOutcome {
        var logger = logger
        logger[metadataKey: "run_id"] = "\(claimed.summary.id)"
        logger[metadataKey: "tenant"] = "\(claimed.summary.configuration.tenant ?? RunConfiguration.defaultTenant)"
        let equipment: RunEquipment
        var claimed = claimed
        do {
            // Starting MCP servers may take longer than a lease: it is renewed meanwhile.
            let keeper = LeaseKeeper(
                lease: claimed.lease, store: store, duration: leaseDuration.seconds, clock: clock, now: now, logger: logger)
            equipment = try await withThrowingTaskGroup(of: RunEquipment?.self) { group in
                group.addTask { [equip, summary = claimed.summary] in try await equip(summary) }
                group.addTask { [clock, leaseDuration] in
                    while true {
                        try await clock.sleep(for: leaseDuration / 3)
                        try await keeper.renew()
                    }
                }
                defer { group.cancelAll() }
                while let result = try await group.next() {
                    if let equipment = result { return equipment }
                }
                throw TroupeError(.internal, "Equipping run \(claimed.summary.id) ended without a result.")
            }
            claimed.lease = keeper.lease
        } catch {
            let retryAt = ClaimBackoff.retryAt(attempt: claimed.attempt, after: now())
            try? await store.releaseLease(claimed.lease, outcome: .failed(retryAt: retryAt))
            logger.error(
                "cannot prepare the run's model and tools; released it to be tried again later",
                metadata: ["error": "\(TroupeError.wrap(error).message)", "attempt": "\(claimed.attempt)"])
            return .failed
        }
        var driver = RunDriver(
            store: store, model: equipment.model, tools: equipment.tools, owner: owner, leaseDuration: leaseDuration,
            clock: clock, now: now, logger: logger, observer: observer)
        driver.drain = drain
        logger.info("driving", metadata: ["attempt": "\(claimed.attempt)"])
        do {
            let machine = try await driver.drive(claimed, configuration: equipment.configuration)
            if machine.status.isTerminal || machine.status == .needsAttention || machine.status == .waitingForApproval {
                logger.info("run \(machine.status.rawValue)")
                return .finished
            }
            logger.info("handed the run back (draining)", metadata: ["sequence": "\(machine.sequence)"])
            return .handedBack
        } catch {
            let error = TroupeError.wrap(error)
            switch error.code {
            case .leaseHeld:
                logger.warning("another driver took the run over; this worker stops driving it", metadata: ["error": "\(error.message)"])
                return .lostLease
            case .cancelled:
                logger.warning("drive cancelled by the shutdown; the run's lease is released")
                return .cancelled
            default:
                logger.error(
                    "drive failed; the run is released to be tried again later",
                    metadata: ["error": "\(error.message)", "code": "\(error.code.rawValue)", "attempt": "\(claimed.attempt)"])
                return .failed
            }
        }
    }
}
