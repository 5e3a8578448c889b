import Foundation
import Testing
import Troupe
@testable import TroupeSQLite

@Suite struct SQLiteDatabaseTests {
    @Test func textRoundTripsByteForByteIncludingEmptyAndNUL() async throws {
        try await withTemporaryDirectory { directory in
            let database = try SQLiteDatabase(path: directory + "/t.db", busyTimeoutMilliseconds: 100)
            try database.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            let values = ["", "a\u{0}b", "ü 🎉 \"quoted\" 'single'", String(repeating: "x", count: 100_000)]
            for (key, value) in values.enumerated() {
                try database.query("INSERT INTO t (k, v) VALUES (?, ?)", [.integer(key), .text(value)])
            }
            let rows = try database.query("SELECT k, v FROM t ORDER BY k")
            #expect(rows.map { $0["v"].string } == values)
            #expect(rows.map { $0["k"].integer } == Array(0..<values.count))
            #expect(rows.first?["missing"] == SQLiteValue.null)
        }
    }

    @Test func queriesBeyondTheStatementCacheStillWork() async throws {
        try await withTemporaryDirectory { directory in
            let database = try SQLiteDatabase(path: directory + "/t.db", busyTimeoutMilliseconds: 100)
            // 200 distinct statements, twice: the cache keeps 64, the rest are prepared and finalized per use.
            for _ in 0..<2 {
                for k in 0..<200 {
                    let rows = try database.query("SELECT ? + \(k) AS n", [.integer(1)])
                    #expect(rows.first?["n"].integer == k + 1)
                }
            }
        }
    }

    @Test func errorsQuoteSQLiteAndLeaveTheConnectionUsable() async throws {
        try await withTemporaryDirectory { directory in
            let database = try SQLiteDatabase(path: directory + "/t.db", busyTimeoutMilliseconds: 100)
            try database.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            #expect(throws: TroupeError.self) { try database.query("SELEC nonsense") }
            try database.query("INSERT INTO t (k) VALUES (1)")
            let duplicate = #expect(throws: TroupeError.self) { try database.query("INSERT INTO t (k) VALUES (?)", [.integer(1)]) }
            #expect(duplicate?.code == .storage)
            #expect(duplicate?.message.contains("UNIQUE constraint failed") == true)
            // A failed transaction is rolled back as a whole.
            #expect(throws: TroupeError.self) {
                try database.transaction {
                    try database.query("INSERT INTO t (k) VALUES (2)")
                    try database.query("INSERT INTO t (k) VALUES (1)")
                }
            }
            #expect(try database.query("SELECT COUNT(*) AS n FROM t").first?["n"].integer == 1)
            database.close()
            let closed = #expect(throws: TroupeError.self) { try database.query("SELECT 1") }
            #expect(closed?.message.contains("is closed") == true)
        }
    }

    @Test func aStoreUsedAfterCloseAnswersWithAnError() async throws {
        try await withTemporaryDirectory { directory in
            let store = try await SQLiteRunStore.open(path: directory + "/runs.db")
            let id = RunID.make()
            _ = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(), at: fixedDate)
            await store.close()
            let error = await #expect(throws: TroupeError.self) {
                try await store.append([.leaseAcquired(owner: "w")], to: id, expectedSequence: 1, at: fixedDate)
            }
            #expect(error?.code == .storage)
            await #expect(throws: TroupeError.self) { try await store.run(id) }
        }
    }
}
