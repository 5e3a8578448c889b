import ArgumentParser
import Foundation
import JournalFixture
import Troupe

struct JournalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "SQLite append latency of model-call events, and the time to load and fold a long journal."
    )

    @Option(help: "Events in the journal to fold (about).")
    var events = 1_000

    @Option(help: "Times the fold is measured.")
    var repetitions = 20

    func run() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("troupe-bench-journal-\(UUID().uuidString).db").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = ContinuousClock()
        var appendLatencies: [Duration] = []
        let id = try await SQLiteRunStore.withStore(path: path) { store in
            try await JournalFixture.write(steps: JournalFixture.steps(forEvents: events), to: store) { appendLatencies.append($0) }
        }
        var folds: [Duration] = []
        var folded = 0
        for _ in 0..<repetitions {
            try await SQLiteRunStore.withStore(path: path) { store in
                let start = clock.now
                let machine = try RunStateMachine(runID: id, replaying: try await store.events(of: id))
                folds.append(clock.now - start)
                folded = machine.sequence
            }
        }
        print(
            "{\"mode\": \"journal\", \"events\": \(folded), \"append_p50_ms\": \(Measurement.format(Measurement.percentile(appendLatencies, 0.5) * 1000)), "
                + "\"append_p99_ms\": \(Measurement.format(Measurement.percentile(appendLatencies, 0.99) * 1000)), "
                + "\"fold_p50_ms\": \(Measurement.format(Measurement.percentile(folds, 0.5) * 1000))}"
        )
    }
}
