import Foundation
import Synchronization
import Troupe

/// A ``RunStore`` that forwards to another and lets a test act between a call and its answer:
/// another writer appending, a takeover, a worker claiming, a failure.
final class InterceptingStore: RunStore, Sendable {
    let inner: any RunStore
    /// Called after an append was written, with its events and the lease it carried.
    let afterAppend: Mutex<(@Sendable ([RunEvent], Lease?) async throws -> Void)?> = Mutex(nil)
    /// Called before an append is forwarded; may throw in its place.
    let beforeAppend: Mutex<(@Sendable ([RunEvent]) async throws -> Void)?> = Mutex(nil)
    /// Called after a run was created (leased or not).
    let afterCreate: Mutex<(@Sendable (RunID) async throws -> Void)?> = Mutex(nil)
    /// Errors the inner store threw, in order.
    let errors = Mutex<[TroupeError]>([])

    init(_ inner: any RunStore) {
        self.inner = inner
    }

    /// Plays a driver paused (SIGSTOP) for two minutes right after it journaled the start of a
    /// tool call, during which `owner` (if any) takes the run's lease.
    func pauseAfterAToolStarts(_ moving: MovableNow, thenTakenOverBy owner: String?) {
        let inner = inner
        afterAppend.withLock {
            $0 = { events, lease in
                guard let lease, events.contains(where: { if case .activityStarted(_, .tool) = $0 { true } else { false } }) else { return }
                moving.advance(by: 120)
                guard let owner else { return }
                _ = try await inner.acquireLease(
                    on: lease.runID, owner: owner, until: moving.now.addingTimeInterval(30), replacing: nil, at: moving.now)
            }
        }
    }

    private func recording<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as TroupeError {
            errors.withLock { $0.append(error) }
            throw error
        }
    }

    func createRun(id: RunID, goal: String, configuration: RunConfiguration, at time: Date) async throws -> RunSummary {
        let summary = try await recording { try await inner.createRun(id: id, goal: goal, configuration: configuration, at: time) }
        try await afterCreate.withLock { $0 }?(id)
        return summary
    }

    func createLeasedRun(
        id: RunID, goal: String, configuration: RunConfiguration, owner: String, until expiry: Date, at time: Date
    ) async throws -> LeasedRun {
        let run = try await recording {
            try await inner.createLeasedRun(id: id, goal: goal, configuration: configuration, owner: owner, until: expiry, at: time)
        }
        try await afterCreate.withLock { $0 }?(id)
        return run
    }

    func append(_ events: [RunEvent], to run: RunID, expectedSequence: Int, lease: Lease?, at time: Date) async throws -> Int {
        try await beforeAppend.withLock { $0 }?(events)
        let sequence = try await recording {
            try await inner.append(events, to: run, expectedSequence: expectedSequence, lease: lease, at: time)
        }
        try await afterAppend.withLock { $0 }?(events, lease)
        return sequence
    }

    func events(of run: RunID, after sequence: Int) async throws -> [RunEventRecord] {
        try await recording { try await inner.events(of: run, after: sequence) }
    }

    func run(_ id: RunID, tenant: String?) async throws -> RunSummary? { try await recording { try await inner.run(id, tenant: tenant) } }
    func runs(_ query: RunQuery) async throws -> [RunSummary] { try await recording { try await inner.runs(query) } }

    func acquireLease(on run: RunID, owner: String, until expiry: Date, replacing: Lease?, at time: Date) async throws -> Lease {
        try await recording { try await inner.acquireLease(on: run, owner: owner, until: expiry, replacing: replacing, at: time) }
    }

    func renewLease(_ lease: Lease, until expiry: Date) async throws -> Lease {
        try await recording { try await inner.renewLease(lease, until: expiry) }
    }

    func releaseLease(_ lease: Lease, outcome: DriveOutcome) async throws {
        try await recording { try await inner.releaseLease(lease, outcome: outcome) }
    }

    func lease(of run: RunID) async throws -> Lease? { try await recording { try await inner.lease(of: run) } }

    func claimNextRun(owner: String, until expiry: Date, rules: ClaimRules, at time: Date) async throws -> LeasedRun? {
        try await recording { try await inner.claimNextRun(owner: owner, until: expiry, rules: rules, at: time) }
    }

    nonisolated func announcements() -> AsyncStream<Void> { inner.announcements() }
    nonisolated func publish(_ text: LiveText) { inner.publish(text) }
    nonisolated func liveText(of run: RunID) -> AsyncStream<LiveText> { inner.liveText(of: run) }
    func close() async throws { try await inner.close() }
}

/// Wall time a test moves by hand (the driver's `now`).
final class MovableNow: Sendable {
    private let date: Mutex<Date>

    init(_ start: Date = fixedDate) {
        date = Mutex(start)
    }

    var now: Date { date.withLock { $0 } }

    func advance(by seconds: TimeInterval) {
        date.withLock { $0 = $0.addingTimeInterval(seconds) }
    }
}
