import Foundation
import PostgresNIO
import Synchronization
import Testing
import Troupe

@testable import TroupePostgres
import TroupeTesting

/// The PostgreSQL store: the conformance suite, and what only a shared database shows — writers
/// on many connections (machines), claims racing each other, processes migrating at once.
/// `./scripts/test` runs these after the others, as the MCP tests: a database server's CPU would
/// starve the timing tests beside them.
@Suite(.enabled(if: PostgresForTests.available, "needs PostgreSQL: ./scripts/test starts one (TROUPE_TEST_POSTGRES_URL)"))
struct PostgresRunStoreTests {
    @Test func conformsToTheStoreContract() async throws {
        try await RunStoreConformance {
            try await PostgresRunStore.open(url: try await PostgresForTests.freshDatabase(), logger: PostgresForTests.logger)
        }.run()
    }

    private func withStores<T>(_ count: Int, _ body: ([PostgresRunStore]) async throws -> T) async throws -> T {
        let url = try await PostgresForTests.freshDatabase()
        var stores: [PostgresRunStore] = []
        for _ in 0..<count { stores.append(try await PostgresRunStore.open(url: url, logger: PostgresForTests.logger)) }
        do {
            let result = try await body(stores)
            for store in stores { await store.close() }
            return result
        } catch {
            for store in stores { await store.close() }
            throw error
        }
    }

    /// Twenty appends at the same point of one journal from two stores (two machines): one wins,
    /// the others conflict, and the journal has no fork and no gap.
    /// Claims at once from two processes' pools never drive more of a tenant's runs than its
    /// limit, and another tenant's runs are claimed beside them.
    @Test func tenantLimitsHoldAcrossConcurrentClaimers() async throws {
        try await withStores(2) { stores in
            let now = Date()
            for (tenant, count) in [("limited", 12), ("other", 4)] {
                var configuration = RunConfiguration()
                configuration.tenant = tenant
                for offset in 0..<count {
                    _ = try await stores[0].createRun(
                        id: RunID.make(), goal: tenant, configuration: configuration, at: now.addingTimeInterval(Double(offset) / 1000))
                }
            }
            let rules = ClaimRules(maxAttempts: 5, maxConcurrentRuns: ["limited": 1])
            let claimed = try await withThrowingTaskGroup(of: String?.self) { group in
                for index in 0..<16 {
                    group.addTask {
                        try await stores[index % 2].claimNextRun(owner: "w\(index)", until: now + 60, rules: rules, at: now + 1)?
                            .summary.configuration.owningTenant
                    }
                }
                return try await group.reduce(into: [String]()) { if let tenant = $1 { $0.append(tenant) } }
            }
            #expect(claimed.filter { $0 == "limited" }.count == 1, "\(claimed)")
            #expect(claimed.filter { $0 == "other" }.count == 4, "\(claimed)")
        }
    }

    /// A tool that records the text of each call.
    final class RecordingTool: Tool, Sendable {
        let name = "echo"
        let description = "Send the text."
        let effect = ToolEffect.sideEffecting
        let parameters: JSONSchema = .object([.init("text", .string("What to send."))])
        let texts = Mutex<[String]>([])

        func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
            let text = arguments["text"]?.stringValue ?? ""
            texts.withLock { $0.append(text) }
            return ToolOutput("sent \(text)")
        }
    }

    /// Two workers on two connections (two machines) drive runs whose tool needs approval: each
    /// waits with no worker holding it, and once decided through either connection runs exactly
    /// once if approved (with the edited arguments if edited), never if denied; a timeout applies
    /// its default (approve here) through the workers' sweep.
    @Test func approvalsAcrossTwoWorkers() async throws {
        try await withStores(2) { stores in
            let tool = RecordingTool()
            let policy = ToolPolicy(
                requireApproval: ["echo"], limits: ["echo": ToolLimits(approvalTimeoutSeconds: 3_600, approvalTimeoutDecision: .approve)])
            let tools = try ToolRegistry([tool], policy: policy)
            let clock = Mutex(Date())
            let now: @Sendable () -> Date = { clock.withLock { $0 } }
            let drain = DrainSignal()
            let workers = stores.enumerated().map { index, store in
                var worker = RunWorker(
                    store: store, owner: "worker-\(index)", pollInterval: .milliseconds(50), now: now, logger: PostgresForTests.logger,
                    equip: { _ in RunEquipment(model: PlayingModel(steps: 1), tools: tools) })
                worker.approvalTimeoutSweep = .milliseconds(50)
                return worker
            }
            let working = Task {
                await withTaskGroup(of: Void.self) { group in
                    for worker in workers { group.addTask { await worker.run(until: drain) } }
                }
            }
            var runs: [RunID] = []
            for index in 0..<4 {
                let id = RunID.make()
                _ = try await stores[index % 2].createRun(
                    id: id, goal: "run \(index)", configuration: RunConfiguration(model: "m"), at: now())
                runs.append(id)
            }
            for id in runs {
                try await eventually("run \(id) waits") { try await stores[0].requireRun(id).status == .waitingForApproval }
            }
            #expect(tool.texts.withLock { $0 }.isEmpty)
            let key = ActivityKey(step: "s1", attempt: 1, callIndex: 1)
            _ = try await stores[0].decideApproval(
                runs[0], key: key, decision: .init(verdict: .approve, decidedBy: "alice"), owner: "api-0")
            _ = try await stores[1].decideApproval(
                runs[1], key: key, decision: .init(verdict: .deny, reason: "no", decidedBy: "bob"), owner: "api-1")
            _ = try await stores[1].decideApproval(
                runs[2], key: key, decision: .init(verdict: .edit, arguments: #"{"text":"edited"}"#, decidedBy: "carol"), owner: "api-1")
            for id in runs.prefix(3) {
                try await eventually("run \(id) succeeds") { try await stores[1].requireRun(id).status == .succeeded }
            }
            #expect(try await stores[0].requireRun(runs[3]).status == .waitingForApproval)
            clock.withLock { $0 += 3_601 }
            try await eventually("the timeout's default applies") { try await stores[0].requireRun(runs[3]).status == .succeeded }
            drain.begin()
            await working.value
            #expect(tool.texts.withLock { $0 }.sorted() == ["edited", "hello", "hello"], "approved, edited, timed out; denied never")
            let timedOut = try RunStateMachine(runID: runs[3], replaying: try await stores[0].events(of: runs[3]))
            #expect(timedOut.approvals[key]?.decision?.decidedBy == ApprovalDecision.timeoutDecider)
        }
    }

    @Test func writersOnTwoConnectionsNeverForkAJournal() async throws {
        try await withStores(2) { stores in
            let id = RunID.make()
            _ = try await stores[0].createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Date())
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for index in 0..<20 {
                    group.addTask {
                        let store = stores[index % 2]
                        do {
                            _ = try await store.append(
                                [.stepStarted(stepID: "s\(index)", attempt: 1)], to: id, expectedSequence: 1, at: Date())
                            return true
                        } catch {
                            return false
                        }
                    }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 }.count == 1)
            let journal = try await stores[1].events(of: id)
            #expect(journal.map(\.sequence) == [1, 2])
            #expect(try await stores[1].requireRun(id).lastSequence == 2)
        }
    }

    /// Four workers claim at once: each pending run goes to exactly one of them.
    @Test func racingClaimsTakeEachRunOnce() async throws {
        try await withStores(4) { stores in
            var ids: Set<RunID> = []
            for _ in 0..<12 {
                let id = RunID.make()
                _ = try await stores[0].createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Date())
                ids.insert(id)
            }
            let claimed = try await withThrowingTaskGroup(of: [RunID].self) { group in
                for (index, store) in stores.enumerated() {
                    group.addTask {
                        var mine: [RunID] = []
                        while let run = try await store.claimNextRun(
                            owner: "worker\(index)", until: Date().addingTimeInterval(30), maxAttempts: 5, at: Date())
                        {
                            mine.append(run.summary.id)
                        }
                        return mine
                    }
                }
                return try await group.reduce(into: [RunID]()) { $0 += $1 }
            }
            #expect(claimed.count == 12)
            #expect(Set(claimed) == ids)
        }
    }

    /// Three processes starting at once on an empty database: the advisory lock makes one of
    /// them migrate, and the others find the schema done.
    @Test func storesOpeningAtOnceMigrateOnce() async throws {
        let url = try await PostgresForTests.freshDatabase()
        let stores = try await withThrowingTaskGroup(of: PostgresRunStore.self) { group in
            for _ in 0..<3 { group.addTask { try await PostgresRunStore.open(url: url, logger: PostgresForTests.logger) } }
            return try await group.reduce(into: [PostgresRunStore]()) { $0.append($1) }
        }
        for store in stores {
            #expect(try await store.schemaVersion() == PostgresRunStore.latestSchemaVersion)
            await store.close()
        }
    }

    @Test func aSchemaNewerThanTheBuildIsRefusedNamingBothVersions() async throws {
        let url = try await PostgresForTests.freshDatabase()
        try await PostgresRunStore.withStore(url: url, logger: PostgresForTests.logger) { _ in }
        let client = PostgresClient(
            configuration: try PostgresLocation(url: url).clientConfiguration(), backgroundLogger: PostgresForTests.logger)
        let runner = Task { await client.run() }
        try await client.query("INSERT INTO troupe_schema_migrations (version, applied_at) VALUES (99, 0)", logger: PostgresForTests.logger)
        runner.cancel()
        let error = await #expect(throws: TroupeError.self) {
            _ = try await PostgresRunStore.open(url: url, logger: PostgresForTests.logger)
        }
        #expect(error?.code == .storage)
        #expect(
            error?.message.contains("version 99, newer than this troupe understands (\(PostgresRunStore.latestSchemaVersion))") == true,
            "\(String(describing: error))")
    }

    /// The password never shows: not in the location, not in the error of a failed connection.
    /// A value PostgreSQL refuses (text with a NUL character) fails that write alone — whether
    /// it is alone in its commit or shares one — and the store goes on.
    @Test func aWriteTheDatabaseRefusesFailsAlone() async throws {
        let url = try await PostgresForTests.freshDatabase()
        try await PostgresRunStore.withStore(url: url, logger: PostgresForTests.logger) { store in
            let bad = RunID.make()
            _ = try await store.createRun(id: bad, goal: "g", configuration: RunConfiguration(), at: Date())
            let error = await #expect(throws: TroupeError.self) {
                try await store.append([.runSucceeded(answer: "a\u{0}b")], to: bad, expectedSequence: 1, at: Date())
            }
            #expect(error?.code == .storage, "\(String(describing: error))")
            #expect(try await store.append([.stepStarted(stepID: "s", attempt: 1)], to: bad, expectedSequence: 1, at: Date()) == 2)

            var good: [RunID] = []
            for _ in 0..<20 {
                let id = RunID.make()
                _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Date())
                good.append(id)
            }
            let results = await withTaskGroup(of: Bool.self) { group in
                for id in good {
                    group.addTask {
                        (try? await store.append([.stepStarted(stepID: "s", attempt: 1)], to: id, expectedSequence: 1, at: Date())) != nil
                    }
                }
                group.addTask {
                    (try? await store.append([.runSucceeded(answer: "\u{0}")], to: bad, expectedSequence: 2, at: Date())) != nil
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(results.filter { $0 }.count == good.count)
            for id in good { #expect(try await store.requireRun(id).lastSequence == 2) }
            #expect(try await store.requireRun(bad).lastSequence == 2)
        }
    }

    /// An append whose statement could not be prepared (the table locked by an operator's DDL
    /// past the lock time-out) leaves no connection behind that fails every later append.
    @Test func aFailedPrepareDoesNotPoisonTheConnection() async throws {
        let url = try await PostgresForTests.freshDatabase()
        try await PostgresRunStore.withStore(url: url, logger: PostgresForTests.logger) { store in
            var ids: [RunID] = []
            for _ in 0..<20 {
                let id = RunID.make()
                _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Date())
                ids.append(id)
            }
            let other = try RowLock(url: url)
            defer { other.stop() }
            try await other.lock("LOCK TABLE troupe_events IN ACCESS EXCLUSIVE MODE")
            let error = await #expect(throws: TroupeError.self) {
                try await store.append([.stepStarted(stepID: "s", attempt: 1)], to: ids[0], expectedSequence: 1, at: Date())
            }
            #expect(error?.code == .storageUnavailable, "\(String(describing: error))")
            try await other.unlock()
            for id in ids {
                #expect(try await store.append([.stepStarted(stepID: "s", attempt: 1)], to: id, expectedSequence: 1, at: Date()) == 2)
            }
        }
    }

    @Test func thePasswordNeverAppears() async throws {
        let location = try PostgresLocation(url: "postgres://app:s3cr3t-pw@127.0.0.1:1/runs?sslmode=disable")
        #expect(location.description == "postgres://app@127.0.0.1:1/runs")
        #expect(location.password == "s3cr3t-pw")
        let fromVariable = try PostgresLocation(url: "postgres://app@db.internal/runs", environment: ["PGPASSWORD": "from-env"])
        #expect(fromVariable.password == "from-env" && fromVariable.port == 5432)
        #expect(PostgresLocation.redacted("postgres://app:s3cr3t-pw@h/db").contains("s3cr3t") == false)
        let error = await #expect(throws: TroupeError.self) {
            _ = try await PostgresRunStore.open(
                url: "postgres://app:s3cr3t-pw@127.0.0.1:1/runs?sslmode=disable", logger: PostgresForTests.logger)
        }
        #expect(error?.message.contains("s3cr3t") == false, "\(String(describing: error))")
        #expect(error?.code == .storageUnavailable && error?.message.contains("cannot be reached") == true, "\(String(describing: error))")
        #expect(throws: TroupeError.self) { try PostgresLocation(url: "postgres://host-only") }
        // Passwords that do not parse as one are still hidden; percent-encoding is decoded once.
        for url in ["postgres://app:a#b@h/db", "postgres://app:123/x@h/db"] {
            #expect(!PostgresLocation.redacted(url).contains("a#b") && !PostgresLocation.redacted(url).contains("123/x"))
            let refused = #expect(throws: TroupeError.self) { try PostgresLocation(url: url) }
            #expect(refused?.message.contains("a#b") == false && refused?.message.contains("123/x") == false)
        }
        #expect(try PostgresLocation(url: "postgres://u:50%25off@h/db").password == "50%off")
        #expect(try PostgresLocation(url: "postgres://u@[::1]:5433/db").host == "::1")
        #expect(try PostgresLocation(url: "postgres://u@h/db?sslmode=verify-full").sslMode == "verify-full")
        #expect(throws: TroupeError.self) { try PostgresLocation(url: "postgres://h/db?sslmode=verify-ca") }
    }

    /// The CLI takes a `postgres://` store wherever it takes a SQLite one: a run, the list, the
    /// document; the hint it prints names the store without a password.
    @Test func theCLIRunsAgainstAPostgreSQLStore() async throws {
        let url = try await PostgresForTests.freshDatabase()
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 1)) { mock in
            try await withTemporaryDirectory { directory in
                let run = try await CLIProcess.run(
                    ["run", "Say hello", "--tools", "none", "--base-url", mock.baseURL, "--store", url], directory: directory)
                #expect(run.status == 0, "output:\n\(run.output)")
                #expect(run.output.contains("--store postgres://postgres@"), "\(run.output)")
                let list = try await CLIProcess.run(["runs", "--json", "--store", url], directory: directory)
                #expect(list.status == 0, "output:\n\(list.output)")
                let runs = try JSONValue.parse(list.output).arrayValue ?? []
                #expect(runs.count == 1 && runs.first?["status"] == "succeeded")
                let id = try #require(runs.first?["id"]?.stringValue)
                let show = try await CLIProcess.run(["show", id, "--json"], directory: directory, environment: ["TROUPE_STORE": url])
                #expect(try JSONValue.parse(show.output)["status"] == "succeeded")
                let unreachable = try await CLIProcess.run(
                    ["runs", "--store", "postgres://app:pw-secret@127.0.0.1:1/none?sslmode=disable"], directory: directory)
                #expect(unreachable.status == 7, "output:\n\(unreachable.output)")
                #expect(!unreachable.output.contains("pw-secret"))
            }
        }
    }

    @Test func migrateShowsThenAppliesTheSchema() async throws {
        let url = try await PostgresForTests.freshDatabase()
        try await withTemporaryDirectory { directory in
            let dry = try await CLIProcess.run(["migrate", "--dry-run", "--store", url], directory: directory)
            #expect(dry.status == 0, "output:\n\(dry.output)")
            #expect(
                dry.output.contains("-- migration 1") && dry.output.contains("CREATE TABLE troupe_runs")
                    && dry.output.contains("-- migration 2"))
            let pending = try await PostgresRunStore.pendingMigrations(url: url, logger: PostgresForTests.logger)
            #expect(pending.map(\.version) == [1, 2, 3, 4], "a dry run changes nothing")
            let applied = try await CLIProcess.run(["migrate", "--store", url], directory: directory)
            #expect(applied.status == 0 && applied.output.contains("applied migrations 1, 2, 3, 4"), "output:\n\(applied.output)")
            let again = try await CLIProcess.run(["migrate", "--store", url], directory: directory)
            #expect(again.output.contains("nothing to do"), "output:\n\(again.output)")
        }
    }

    /// Appends that arrive while a commit is in flight share the next one, and one that
    /// conflicts fails alone. (A row lock held from another connection keeps the first batch in
    /// flight while the others queue up: no timing is involved.)
    @Test func appendsWaitingForACommitShareTheNextAndAConflictFailsAlone() async throws {
        let url = try await PostgresForTests.freshDatabase()
        try await PostgresRunStore.withStore(url: url, logger: PostgresForTests.logger) { store in
            var created: [RunID] = []
            for _ in 0..<40 {
                let id = RunID.make()
                _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Date())
                created.append(id)
            }
            let ids = created
            let other = try RowLock(url: url)
            defer { other.stop() }
            try await other.lock(ids[0])
            let first = Task {
                try await store.append([.stepStarted(stepID: "s", attempt: 1)], to: ids[0], expectedSequence: 1, at: Date())
            }
            // The first batch now waits for the row lock.
            while try await other.lockWaits() == 0 { try await Task.sleep(for: .milliseconds(5)) }
            let batchesBefore = await store.batches
            let others = Task {
                await withTaskGroup(of: (Int, Bool).self) { group in
                    for index in 1..<ids.count {
                        group.addTask {
                            // Run 7's append expects a journal end it does not have: a conflict.
                            let expected = index == 7 ? 5 : 1
                            let ok =
                                (try? await store.append(
                                    [.stepStarted(stepID: "s", attempt: 1)], to: ids[index], expectedSequence: expected, at: Date())) != nil
                            return (index, ok)
                        }
                    }
                    return await group.reduce(into: [Int: Bool]()) { $0[$1.0] = $1.1 }
                }
            }
            // Let them all queue up behind the batch in flight, then let it go.
            try await Task.sleep(for: .milliseconds(300))
            try await other.unlock()
            _ = try await first.value
            let results = await others.value
            #expect(results.filter { $0.value }.count == 38 && results[7] == false)
            // The first batch was in flight while the others queued: they share the few
            // transactions the store runs at once beside it.
            let batches = await store.batches - batchesBefore
            #expect(batches < PostgresRunStore.maxConcurrentBatches, "\(batches) more transactions for 39 appends: they were not batched")
            for (index, id) in ids.enumerated() {
                #expect(try await store.requireRun(id).lastSequence == (index == 7 ? 1 : 2))
            }
        }
    }

    /// A run's row locked by a transaction that never ends (a process frozen mid-write whose
    /// connection the server keeps): writes that need it fail after the lock time-out with
    /// `storageUnavailable` (which drivers retry), instead of holding every write for hours.
    @Test func aRowLockedElsewhereFailsTheWriteAfterTheLockTimeout() async throws {
        let url = try await PostgresForTests.freshDatabase()
        try await PostgresRunStore.withStore(url: url, logger: PostgresForTests.logger) { store in
            let id = RunID.make()
            _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: Date())
            let other = try RowLock(url: url)
            defer { other.stop() }
            try await other.lock(id)
            let error = await #expect(throws: TroupeError.self) {
                _ = try await store.acquireLease(on: id, owner: "w", until: Date().addingTimeInterval(30), replacing: nil, at: Date())
            }
            #expect(error?.code == .storageUnavailable, "\(String(describing: error))")
            #expect(error?.message.contains("55P03") == true)
            try await other.unlock()
            // Once the lock is gone the same write goes through.
            _ = try await store.acquireLease(on: id, owner: "w", until: Date().addingTimeInterval(30), replacing: nil, at: Date())
        }
    }
}

/// A connection that holds one run's row locked (`FOR UPDATE` in an open transaction), as a
/// process frozen in the middle of a write would.
private final class RowLock: Sendable {
    private let client: PostgresClient
    private let runner: Task<Void, Never>
    private let holder = Mutex<Task<Void, any Error>?>(nil)
    private let release: AsyncStream<Void>.Continuation
    private let released: AsyncStream<Void>

    init(url: String) throws {
        client = PostgresClient(
            configuration: try PostgresLocation(url: url).clientConfiguration(), backgroundLogger: PostgresForTests.logger)
        let client = client
        runner = Task { await client.run() }
        (released, release) = AsyncStream.makeStream(of: Void.self)
    }

    /// Locks `run`'s row; returns once it is locked.
    func lock(_ run: RunID) async throws {
        try await lock("SELECT 1 FROM troupe_runs WHERE id = \(run.rawValue) FOR UPDATE")
    }

    /// Runs `statement` (one that takes a lock) in a transaction kept open until ``unlock()``.
    func lock(_ statement: PostgresQuery) async throws {
        let (locked, lockedContinuation) = AsyncStream.makeStream(of: Void.self)
        let (client, released) = (client, released)
        holder.withLock {
            $0 = Task {
                try await client.withTransaction(logger: PostgresForTests.logger) { connection in
                    try await connection.query(statement, logger: PostgresForTests.logger)
                    lockedContinuation.yield()
                    for await _ in released { break }
                }
            }
        }
        for await _ in locked { break }
    }

    /// Ends the transaction, and with it the lock.
    func unlock() async throws {
        release.yield()
        try await holder.withLock { $0 }?.value
    }

    /// Sessions of this database waiting for a lock now.
    func lockWaits() async throws -> Int {
        let rows = try await client.query(
            "SELECT count(*)::bigint FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
            logger: PostgresForTests.logger)
        var count = 0
        for try await (value) in rows.decode(Int.self) { count = value }
        return count
    }

    func stop() {
        release.yield()
        runner.cancel()
    }
}
