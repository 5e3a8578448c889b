import Foundation
import Testing
import Troupe
import TroupeTesting

@Suite struct RunStoreTests {
    @Test func inMemoryStoreConforms() async throws {
        try await RunStoreConformance { InMemoryRunStore() }.run()
    }

    @Test func sqliteStoreConforms() async throws {
        try await withTemporaryDirectory { directory in
            try await RunStoreConformance { try await SQLiteRunStore.open(path: directory + "/\(UUID().uuidString).db") }.run()
        }
    }

    @Test func twoWritersOnOneRunOneWinsTheOtherConflicts() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            // Two connections to one file: as two processes would have.
            let first = try await SQLiteRunStore.open(path: path)
            let second = try await SQLiteRunStore.open(path: path)
            let id = RunID.make()
            _ = try await first.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: fixedDate)
            async let a = Result(catching: {
                try await first.append([.runCancelled(reason: "a")], to: id, expectedSequence: 1, at: fixedDate)
            })
            async let b = Result(catching: {
                try await second.append([.runCancelled(reason: "b")], to: id, expectedSequence: 1, at: fixedDate)
            })
            let results = await [a, b]
            let wins = results.filter { (try? $0.get()) != nil }
            let conflicts = results.compactMap { result -> TroupeError? in
                if case .failure(let error as TroupeError) = result { error } else { nil }
            }
            #expect(wins.count == 1)
            #expect(conflicts.map(\.code) == [.journalConflict])
            #expect(try await first.events(of: id).count == 2)
            await first.close()
            await second.close()
        }
    }

    /// Creations and lease changes share group commits with appends; one that is refused leaves
    /// nothing behind and does not disturb the others in its batch.
    @Test func refusedWritesInABatchFailAloneAndLeaveNothingBehind() async throws {
        try await withTemporaryDirectory { directory in
            try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                let held = RunID.make()
                _ = try await store.createRun(id: held, goal: "held", configuration: RunConfiguration(), at: fixedDate)
                _ = try await store.acquireLease(
                    on: held, owner: "a", until: fixedDate.addingTimeInterval(60), replacing: nil, at: fixedDate)
                let fresh = (0..<20).map { _ in RunID.make() }
                let outcomes = await withTaskGroup(of: String.self) { group in
                    for id in fresh {
                        group.addTask {
                            (try? await store.createRun(id: id, goal: "new", configuration: RunConfiguration(), at: fixedDate)) != nil
                                ? "created" : "refused"
                        }
                    }
                    group.addTask {
                        do {
                            _ = try await store.createRun(id: held, goal: "again", configuration: RunConfiguration(), at: fixedDate)
                            return "duplicate created"
                        } catch { return "duplicate \((error as? TroupeError)?.code.rawValue ?? "?")" }
                    }
                    group.addTask {
                        do {
                            _ = try await store.acquireLease(on: held, owner: "b", until: fixedDate, replacing: nil, at: fixedDate)
                            return "lease taken"
                        } catch { return "lease \((error as? TroupeError)?.code.rawValue ?? "?")" }
                    }
                    return await group.reduce(into: []) { $0.append($1) }
                }
                #expect(outcomes.filter { $0 == "created" }.count == 20)
                #expect(outcomes.contains("duplicate invalidInput"))
                #expect(outcomes.contains("lease leaseHeld"))
                #expect(try await store.requireRun(held).goal == "held")
                #expect(try await store.lease(of: held)?.owner == "a")
                #expect(try await store.events(of: held).count == 1)
                #expect(try await store.runs(RunQuery(limit: 100)).count == 21)
            }
        }
    }

    /// A long journal is decoded in parallel chunks; it still comes back whole and in order.
    @Test func aLongJournalReadsBackWholeAndInOrder() async throws {
        try await withTemporaryDirectory { directory in
            try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                let id = RunID.make()
                var sequence = try await store.createRun(id: id, goal: "long", configuration: RunConfiguration(), at: fixedDate)
                    .lastSequence
                var written: [RunEvent] = [.runCreated(goal: "long", configuration: RunConfiguration())]
                for index in 0..<700 {
                    let batch: [RunEvent] = [
                        .stepStarted(stepID: "s\(index)", attempt: 1), .stepCompleted(stepID: "s\(index)", output: "\(index)"),
                    ]
                    sequence = try await store.append(batch, to: id, expectedSequence: sequence, at: fixedDate)
                    written += batch
                }
                let records = try await store.events(of: id)
                #expect(records.map(\.sequence) == Array(1...1_401))
                #expect(records.map(\.event) == written)
                #expect(try await store.events(of: id, after: 1_000).map(\.sequence) == Array(1_001...1_401))
            }
        }
    }

    @Test func concurrentAppendsAreGroupCommittedAndAConflictFailsAlone() async throws {
        try await withTemporaryDirectory { directory in
            try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                let ids = (0..<40).map { _ in RunID.make() }
                for id in ids { _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: fixedDate) }
                let outcomes = await withTaskGroup(of: (RunID, Int, Bool).self) { group in
                    for (index, id) in ids.enumerated() {
                        group.addTask {
                            let ok =
                                (try? await store.append([.leaseAcquired(owner: "w")], to: id, expectedSequence: 1, at: fixedDate)) != nil
                            return (id, index, ok)
                        }
                        if index % 4 == 0 {
                            // A stale writer on the same run, racing in the same batches.
                            group.addTask {
                                let ok =
                                    (try? await store.append([.runCancelled(reason: "stale")], to: id, expectedSequence: 0, at: fixedDate))
                                    != nil
                                return (id, -1, ok)
                            }
                        }
                    }
                    return await group.reduce(into: []) { $0.append($1) }
                }
                let good = outcomes.filter { $0.1 >= 0 }
                let stale = outcomes.filter { $0.1 < 0 }
                #expect(good.count == 40 && good.allSatisfy { $0.2 })
                #expect(stale.count == 10 && stale.allSatisfy { !$0.2 })
                for id in ids {
                    #expect(try await store.events(of: id).map(\.event.type) == ["runCreated", "leaseAcquired"])
                    #expect(try await store.requireRun(id).lastSequence == 2)
                }
            }
        }
    }

    @Test func reopeningKeepsRunsAndSchema() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let id = RunID.make()
            try await SQLiteRunStore.withStore(path: path) { store in
                _ = try await store.createRun(id: id, goal: "persist me", configuration: RunConfiguration(), at: fixedDate)
            }
            let goal = try await SQLiteRunStore.withStore(path: path) { store in try await store.requireRun(id).goal }
            #expect(goal == "persist me")
        }
    }

    @Test func unreadableLocationGivesAClearStorageError() async throws {
        let error = await #expect(throws: TroupeError.self) {
            _ = try await SQLiteRunStore.open(path: "/proc/troupe-cannot-write-here/runs.db")
        }
        #expect(error?.code == .storage)
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

@Suite struct DamagedStoreTests {
    @Test func aFileThatIsNotADatabaseGivesExitCodeSevenAndAClearMessage() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            try Data(repeating: 0x42, count: 4_096).write(to: URL(fileURLWithPath: path))
            let result = try await CLIProcess.run(["runs", "--store", "sqlite:\(path)"], directory: directory)
            #expect(result.status == 7, "output:\n\(result.output)")
            #expect(result.output.contains("error: SQLite failed on \(path): file is not a database"))
        }
    }

    @Test func aJournalFromANewerTroupeSaysSo() async throws {
        try await withTemporaryDirectory { directory in
            let path = directory + "/runs.db"
            let id = RunID.make()
            try await SQLiteRunStore.withStore(path: path) { store in
                _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: fixedDate)
            }
            // A future event type, written as a newer build would.
            let connection = try await SQLiteConnectionForTests.open(path)
            _ = try await connection.query(
                "INSERT INTO events (run_id, sequence, type, schema_version, recorded_at, payload) VALUES (?, 2, 'fromTheFuture', 2, 0, ?)",
                [.text(id.rawValue), .text(#"{"type":"fromTheFuture"}"#)]
            )
            _ = try await connection.query("UPDATE runs SET last_sequence = 2 WHERE id = ?", [.text(id.rawValue)])
            try await connection.close()

            let shown = try await CLIProcess.run(["show", id.rawValue, "--store", "sqlite:\(path)"], directory: directory)
            #expect(shown.status == 7, "output:\n\(shown.output)")
            #expect(shown.output.contains("Event 2 of run \(id) cannot be read"))
            #expect(shown.output.contains("newer Troupe"))
        }
    }
}
