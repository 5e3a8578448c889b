import Foundation
import SQLiteNIO
import Synchronization
import Testing
import Troupe
import TroupeTesting

/// One regression test per defect of the durable core's review (issue 19), named after its item.
@Suite struct DurableCoreReviewTests {
    // MARK: 1. A step called `plan`

    @Test func item1_aStepCalledPlanIsSentBackForRepair() async throws {
        let model = ScriptedModel([
            .response(.plan(plan([("plan", [], [])]))),
            .response(.plan(plan([("s1", [], [])]))),
            .response(.text("done")),
        ])
        let final = try await makeDriver(store: InMemoryRunStore(), model: model, tools: [])
            .run(goal: "Do it", configuration: RunConfiguration(model: "scripted"))
        #expect(final.status == .succeeded)
        #expect(model.requests.count == 3)
        let repair = try #require(model.requests[1].messages.last?.content)
        #expect(repair.contains("'plan' is reserved"))
    }

    @Test(arguments: ["plan", "PLAN", "a/b", "s 1", ".hidden", String(repeating: "x", count: 65), "é"])
    func item1_stepIdsThatCannotBePartOfAKeyAreRefused(id: String) {
        let validator = PlanValidator(availableTools: [], maxSteps: 5)
        #expect(!validator.check(plan([(id, [], [])])).isEmpty)
    }

    /// A journal written before ids were checked, with a step called `plan` in a later round: its
    /// calls are the step's, not the planner's, because the machine tells them apart by kind.
    @Test func item1_aStepCalledPlanInAnOldJournalIsNotTakenForThePlanner() throws {
        let id = RunID("run_old")
        let planCall = ActivityKey(step: "plan", attempt: 0, callIndex: 0)
        let stepCall = ActivityKey(step: "plan", attempt: 1, callIndex: 0)
        var machine = RunStateMachine(runID: id)
        for event: RunEvent in [
            .runCreated(goal: "g", configuration: RunConfiguration(model: "m")),
            .leaseAcquired(owner: "old"),
            .activityStarted(key: planCall, kind: .model(purpose: .plan)),
            .activityCompleted(key: planCall, result: .model(.plan(plan([("plan", [], [])])))),
            .planProposed(round: 0, plan: plan([("plan", [], [])])),
            .stepStarted(stepID: "plan", attempt: 1),
            .activityStarted(key: stepCall, kind: .model(purpose: .execute)),
            .activityCompleted(key: stepCall, result: .model(.text("the step's answer"))),
        ] {
            try machine.apply(event, at: fixedDate)
        }
        #expect(machine.nextActions() == [.record(.stepCompleted(stepID: "plan", output: "the step's answer"))])
    }

    // MARK: 2. A resolution settles only the call the operator was shown

    /// A journal cut right after both side-effecting calls of one turn started: what a kill leaves.
    private func crashedWithTwoCallsInFlight() async throws -> (InMemoryRunStore, RunID) {
        try await crashedJournal(
            replies: [
                .response(.plan(plan([("s1", ["append_line"], [])]))),
                .response(.toolCalls([("append_line", #"{"text":"a"}"#), ("append_line", #"{"text":"b"}"#)])),
                .response(.text("appended")),
            ],
            tool: CountingTool(name: "append_line", effect: .sideEffecting), goal: "Append two lines")
    }

    @Test func item2_aResolutionSettlesOnlyTheCallTheOperatorWasShown() async throws {
        let (store, id) = try await crashedWithTwoCallsInFlight()
        let tool = CountingTool(name: "append_line", effect: .sideEffecting)
        let driver = try makeDriver(store: store, model: ScriptedModel([.response(.text("appended"))]), tools: [tool], owner: "operator")

        let first = try await driver.drive(id)
        #expect(first.status == .needsAttention)
        #expect(first.attentionKey == ActivityKey(step: "s1", attempt: 1, callIndex: 1))

        // --retry settles the first call only: the run parks again on the second, by name. The
        // first one's retry stands; it runs once the second is decided too.
        let second = try await driver.drive(id, resolution: .retry)
        #expect(second.status == .needsAttention)
        #expect(second.attentionKey == ActivityKey(step: "s1", attempt: 1, callIndex: 2))
        #expect(tool.count == 0)

        let done = try await driver.drive(id, resolution: .skip)
        #expect(done.status == .succeeded)
        #expect(tool.count == 1)
        let resolved = try await store.events(of: id).compactMap { record -> ActivityKey? in
            if case .attentionResolved(let key, _) = record.event { key } else { nil }
        }
        #expect(resolved == [ActivityKey(step: "s1", attempt: 1, callIndex: 1), ActivityKey(step: "s1", attempt: 1, callIndex: 2)])
    }

    @Test func item2_aResolutionMeantForAnotherCallIsRefused() async throws {
        let (store, id) = try await crashedWithTwoCallsInFlight()
        let tool = CountingTool(name: "append_line", effect: .sideEffecting)
        let driver = try makeDriver(store: store, model: ScriptedModel([.response(.text("appended"))]), tools: [tool])
        #expect(try await driver.drive(id).attentionKey == ActivityKey(step: "s1", attempt: 1, callIndex: 1))
        let error = await #expect(throws: TroupeError.self) {
            _ = try await driver.drive(id, resolution: .retry, attentionKey: ActivityKey(step: "s1", attempt: 1, callIndex: 2))
        }
        #expect(error?.code == .journalConflict)
        #expect(tool.count == 0)
        #expect(try await store.requireRun(id).status == .needsAttention)
    }

    // MARK: 3. Fencing

    /// A driver paused right after journaling the start of a side effect wakes after another
    /// driver took the run over: it must neither run the call nor write anything more.
    @Test func item3_aPausedDriverDoesNotActOnALeaseItLost() async throws {
        let inner = InMemoryRunStore()
        let store = InterceptingStore(inner)
        let moving = MovableNow()
        let tool = CountingTool(name: "append_line", effect: .sideEffecting)
        store.pauseAfterAToolStarts(moving, thenTakenOverBy: "other")
        let model = ScriptedModel([
            .response(.plan(plan([("s1", ["append_line"], [])]))),
            .response(.toolCall("append_line", #"{"text":"once"}"#)),
            .response(.text("appended")),
        ])
        let driver = RunDriver(store: store, model: model, tools: try ToolRegistry([tool]), owner: "paused", now: { moving.now })
        let error = await #expect(throws: TroupeError.self) {
            _ = try await driver.run(goal: "Append a line", configuration: RunConfiguration(model: "scripted"))
        }
        #expect(error?.code == .leaseHeld)
        #expect(tool.count == 0)
        let id = try #require(await inner.runs(RunQuery()).first?.id)
        let last = try #require(await inner.events(of: id).last?.event)
        guard case .activityStarted = last else {
            Issue.record("the paused driver wrote after losing its lease: \(last.type)")
            return
        }
    }

    /// Two processes judge the same dead driver dead at once: only one of them takes the run.
    @Test func item3_twoTakeoversOfOneDeadDriverCannotBothSucceed() async throws {
        let store = InMemoryRunStore()
        let id = RunID.make()
        _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: fixedDate)
        let dead = try await store.acquireLease(
            on: id, owner: "dead", until: fixedDate.addingTimeInterval(30), replacing: nil, at: fixedDate)
        let results = await withTaskGroup(of: Bool.self) { group in
            for owner in ["first", "second"] {
                group.addTask {
                    (try? await store.acquireLease(
                        on: id, owner: owner, until: fixedDate.addingTimeInterval(30), replacing: dead, at: fixedDate)) != nil
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.filter { $0 }.count == 1)
    }

    /// An idempotent write run late, after another driver moved on, is a stale write: the
    /// driver keeps its lease before any tool that is not read-only.
    @Test func item3_aPausedDriverDoesNotRunAnIdempotentWriteOnALostLease() async throws {
        let inner = InMemoryRunStore()
        let store = InterceptingStore(inner)
        let moving = MovableNow()
        let tool = CountingTool(name: "put", effect: .idempotent)
        store.pauseAfterAToolStarts(moving, thenTakenOverBy: "other")
        let model = ScriptedModel([
            .response(.plan(plan([("s1", ["put"], [])]))),
            .response(.toolCall("put", #"{"text":"v1"}"#)),
        ])
        let driver = RunDriver(store: store, model: model, tools: try ToolRegistry([tool]), owner: "paused", now: { moving.now })
        await #expect(throws: TroupeError.self) {
            _ = try await driver.run(goal: "Write", configuration: RunConfiguration(model: "scripted"))
        }
        #expect(tool.count == 0)
    }

    /// Paused past its lease but nobody took the run: the driver renews, then carries on.
    @Test func item3_aPausedDriverWhoseLeaseNobodyTookRenewsAndCarriesOn() async throws {
        let store = InterceptingStore(InMemoryRunStore())
        let moving = MovableNow()
        let tool = CountingTool(name: "append_line", effect: .sideEffecting)
        store.pauseAfterAToolStarts(moving, thenTakenOverBy: nil)
        let model = ScriptedModel([
            .response(.plan(plan([("s1", ["append_line"], [])]))),
            .response(.toolCall("append_line", #"{"text":"once"}"#)),
            .response(.text("appended")),
        ])
        let driver = RunDriver(store: store, model: model, tools: try ToolRegistry([tool]), owner: "slow", now: { moving.now })
        let final = try await driver.run(goal: "Append a line", configuration: RunConfiguration(model: "scripted"))
        #expect(final.status == .succeeded)
        #expect(tool.count == 1)
    }

    /// `resume` waits out a lease it cannot judge, then takes the run only if it expired: a driver
    /// that renewed meanwhile is alive and keeps its run.
    @Test func item3_resumeTakesAnExpiredRemoteLeaseWithoutForce() async throws {
        for renewedMeanwhile in [false, true] {
            let store = InMemoryRunStore()
            let id = RunID.make()
            let clock = TestClock()
            let moving = MovableNow()
            _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: moving.now)
            let remote = try await store.acquireLease(
                on: id, owner: "another-host.example/4242/cafe", until: moving.now.addingTimeInterval(5), replacing: nil, at: moving.now)
            let replaced = Mutex<[Lease?]>([])
            let takeover = LeaseTakeover(store: store, runID: id, clock: clock, now: { moving.now })
            let attempt = Task {
                try await takeover.drive { replacing in
                    replaced.withLock { $0.append(replacing) }
                    _ = try await store.acquireLease(
                        on: id, owner: "me", until: moving.now.addingTimeInterval(30), replacing: replacing, at: moving.now)
                    return RunStateMachine(runID: id)
                }
            }
            await clock.waitForSleepers(1)
            if renewedMeanwhile {
                _ = try await store.renewLease(remote, until: moving.now.addingTimeInterval(60))
            }
            moving.advance(by: 6)
            clock.advance(by: .seconds(6))
            let result = await attempt.result
            #expect(replaced.withLock { $0 } == [nil, nil])
            if renewedMeanwhile {
                #expect(throws: TroupeError.self) { try result.get() }
                #expect(await store.lease(of: id)?.owner == remote.owner)
            } else {
                _ = try result.get()
                #expect(await store.lease(of: id)?.owner == "me")
            }
        }
    }

    // MARK: 5. Durability setting

    @Test func item5_sqliteSyncsEveryCommit() async throws {
        try await withTemporaryDirectory { directory in
            let mode = try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                try await store.pragma("synchronous")
            }
            // 2 is FULL: a commit is on disk before it returns, even across a power loss.
            #expect(mode == 2)
        }
    }

    // MARK: 6. Same-host takeover

    @Test func item6_onlyADriverOfThisBootAndPIDNamespaceIsJudged() async throws {
        let me = LeaseOwner.current()
        #expect(me.liveness == .alive)
        let instance = try #require(me.instance)
        let scope = instance.split(separator: "-").dropLast().joined(separator: "-")

        let finished = Process()
        finished.executableURL = URL(fileURLWithPath: "/bin/true")
        try finished.run()
        finished.waitUntilExit()
        let deadPID = finished.processIdentifier
        let host = ProcessInfo.processInfo.hostName

        // Dead: same boot and namespace, no such process.
        #expect(LeaseOwner(host: host, pid: deadPID, nonce: "n", instance: "\(scope)-1").liveness == .dead)
        // Dead: the PID now belongs to a process that started at another time.
        let pid1 = LeaseOwner(host: host, pid: 1, nonce: "n", instance: "\(scope)-999999999999")
        #expect(pid1.liveness == .dead)
        // Unknown: another PID namespace (a container sharing the host name), another boot, an old owner.
        #expect(LeaseOwner(host: host, pid: deadPID, nonce: "n", instance: "ffffffffffff-1-1").liveness == .unknown)
        #expect(LeaseOwner(parsing: "\(host)/\(deadPID)/nonce")?.liveness == .unknown)
        #expect(LeaseOwner(host: "another-host", pid: deadPID, nonce: "n", instance: "\(scope)-1").liveness == .unknown)
        #expect(LeaseOwner(parsing: me.description) == me)
    }

    // MARK: 7. A reload keeps an outcome whole

    @Test func item7_aReloadKeepsThePlannersVerdictWithItsAnswer() async throws {
        let inner = InMemoryRunStore()
        let store = InterceptingStore(inner)
        let interfered = Mutex(false)
        store.beforeAppend.withLock {
            $0 = { events in
                guard events.contains(where: { if case .planProposed = $0 { true } else { false } }),
                    !interfered.withLock({ $0 }), let run = await inner.runs(RunQuery()).first
                else { return }
                interfered.withLock { $0 = true }
                // Another writer (an operator) appends first: the driver's append conflicts and it reloads.
                _ = try await inner.append(
                    [.configurationUpdated(configuration: run.configuration)], to: run.id, expectedSequence: run.lastSequence, at: fixedDate
                )
            }
        }
        let model = ScriptedModel([
            .response(.plan(plan([("s1", [], [])]))),
            .response(.text("done")),
        ])
        let final = try await makeDriver(store: store, model: model, tools: [])
            .run(goal: "Do it", configuration: RunConfiguration(model: "scripted"))
        #expect(interfered.withLock { $0 })
        #expect(final.status == .succeeded)
        #expect(model.requests.count == 2)
        let types = try await inner.events(of: final.runID).map(\.event.type)
        let answer = try #require(types.firstIndex(of: "activityCompleted"))
        #expect(types[answer + 1] == "planProposed")
    }

    // MARK: 8. Store errors

    @Test func item8_aFailingWriteOfOneRunFailsOnlyThatWrite() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            try await SQLiteRunStore.withStore(path: path) { store in
                let ids = (0..<40).map { _ in RunID.make() }
                for id in ids { _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: fixedDate) }
                let poisoned = ids[7]
                let connection = try await SQLiteConnectionForTests.open(path)
                _ = try await connection.query(
                    "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.run_id = '\(poisoned.rawValue)' "
                        + "BEGIN SELECT RAISE(ABORT, 'this run cannot be written'); END")
                try await connection.close()

                let results = try await withThrowingTaskGroup(of: (RunID, Bool).self) { group in
                    for id in ids {
                        group.addTask {
                            let written =
                                (try? await store.append([.leaseAcquired(owner: "w")], to: id, expectedSequence: 1, at: fixedDate)) != nil
                            return (id, written)
                        }
                    }
                    return try await group.reduce(into: [RunID: Bool]()) { $0[$1.0] = $1.1 }
                }
                #expect(results[poisoned] == false)
                #expect(results.filter { $0.key != poisoned }.values.allSatisfy { $0 })
                #expect(try await store.requireRun(poisoned).lastSequence == 1)
            }
        }
    }

    @Test func item8_aDriverWaitsOutADatabaseLockedByAnotherProcess() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let sqlite = try await SQLiteRunStore.open(path: path, busyTimeout: .milliseconds(20))
            let store = InterceptingStore(sqlite)
            let connection = try await SQLiteConnectionForTests.open(path)
            _ = try await connection.query("BEGIN IMMEDIATE")
            let model = ScriptedModel([.response(.plan(plan([("s1", [], [])]))), .response(.text("done"))])
            let driving = Task {
                try await makeDriver(store: store, model: model, tools: []).run(
                    goal: "Do it", configuration: RunConfiguration(model: "scripted"))
            }
            // Hold the lock until the driver has met it at least once, then let go.
            while store.errors.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(5)) }
            _ = try await connection.query("COMMIT")
            try await connection.close()
            let final = try await driving.value
            #expect(final.status == .succeeded)
            #expect(store.errors.withLock { $0 }.allSatisfy { $0.code == .storageUnavailable })
            await sqlite.close()
        }
    }

    // MARK: 9. Claims

    @Test func item9_aRunIsCreatedWithItsLeaseSoNoWorkerCanClaimItFirst() async throws {
        let inner = InMemoryRunStore()
        let store = InterceptingStore(inner)
        let claimed = Mutex<[RunID]>([])
        store.afterCreate.withLock {
            $0 = { _ in
                if let run = await inner.claimNextRun(
                    owner: "worker", until: fixedDate.addingTimeInterval(30), rules: ClaimRules(maxAttempts: 5), at: fixedDate)
                {
                    claimed.withLock { $0.append(run.summary.id) }
                }
            }
        }
        let model = ScriptedModel([.response(.plan(plan([("s1", [], [])]))), .response(.text("done"))])
        let final = try await makeDriver(store: store, model: model, tools: []).run(
            goal: "Do it", configuration: RunConfiguration(model: "scripted"))
        #expect(final.status == .succeeded)
        #expect(claimed.withLock { $0 }.isEmpty)
    }

    @Test func item9_aSecondDriverOfTheSameProcessDoesNotShareTheFirstOnesLease() async throws {
        let store = InMemoryRunStore()
        let id = RunID.make()
        _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(model: "scripted"), at: fixedDate)
        _ = try await store.acquireLease(
            on: id, owner: "same-process", until: fixedDate.addingTimeInterval(30), replacing: nil, at: fixedDate)
        let model = ScriptedModel([.response(.plan(plan([("s1", [], [])]))), .response(.text("done"))])
        let error = await #expect(throws: TroupeError.self) {
            _ = try await makeDriver(store: store, model: model, tools: [], owner: "same-process").drive(id)
        }
        #expect(error?.code == .leaseHeld)
        #expect(model.requests.isEmpty)
    }

    @Test func item9_aDriveThatFailsIsNotClaimedAgainAtOnce() async throws {
        let inner = InMemoryRunStore()
        let store = InterceptingStore(inner)
        store.beforeAppend.withLock {
            $0 = { events in
                if events.contains(where: { if case .stepStarted = $0 { true } else { false } }) {
                    throw TroupeError(.storage, "the disk is full")
                }
            }
        }
        let model = ScriptedModel([.response(.plan(plan([("s1", [], [])])))])
        await #expect(throws: TroupeError.self) {
            _ = try await makeDriver(store: store, model: model, tools: []).run(
                goal: "Do it", configuration: RunConfiguration(model: "scripted"))
        }
        let id = try #require(await inner.runs(RunQuery()).first?.id)
        #expect(await inner.lease(of: id) == nil)
        #expect(
            await inner.claimNextRun(owner: "w", until: fixedDate.addingTimeInterval(60), rules: ClaimRules(maxAttempts: 5), at: fixedDate)
                == nil)
        let later = await inner.claimNextRun(
            owner: "w", until: fixedDate.addingTimeInterval(60), rules: ClaimRules(maxAttempts: 5), at: fixedDate.addingTimeInterval(5))
        #expect(later?.summary.id == id)
        #expect(later?.attempt == 2)
    }
}
