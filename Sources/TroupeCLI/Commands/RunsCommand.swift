import ArgumentParser
import Foundation
import Troupe

struct RunsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs",
        abstract: "List stored runs, newest first.",
        discussion: "Example: troupe runs --status failed --status needsAttention --json"
    )

    @Option(
        name: .long,
        help:
            "Only runs with this status (repeatable): \(RunStatus.allCases.map(\.rawValue).joined(separator: ", "))."
    )
    var status: [String] = []

    @Option(name: .long, help: "The most runs to list (default: 50).")
    var limit = 50

    @Flag(
        name: .long, help: "Print a JSON array of run objects (id, status, goal, createdAt, usage, …).")
    var json = false

    @OptionGroup var global: GlobalOptions
    @OptionGroup var remote: ServerOption

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            var statuses: Set<RunStatus> = []
            for name in status {
                guard let parsed = RunStatus(rawValue: name) else {
                    throw TroupeError(
                        .invalidInput,
                        "Unknown status '\(name)'. Use one of: \(RunStatus.allCases.map(\.rawValue).joined(separator: ", "))."
                    )
                }
                statuses.insert(parsed)
            }
            guard limit > 0 else { throw TroupeError(.invalidInput, "--limit must be positive.") }
            let runs: [RunReport]
            if let server = try remote.remote() {
                runs = try await Self.list(statuses, limit: limit, on: server)
            } else {
                let query = RunQuery(statuses: statuses, limit: limit)
                runs = try await global.withStore { opened in try await opened.store.runs(query) }.map(RunReport.summary)
            }
            if json {
                print(try RunReport.json(runs))
                return
            }
            if runs.isEmpty {
                say(
                    "No runs\(statuses.isEmpty ? "" : " with that status"). Start one with `troupe demo` or `troupe run \"GOAL\"`."
                )
                return
            }
            let formatter = ISO8601DateFormatter()
            for run in runs {
                let status = run.status.padding(toLength: 15, withPad: " ", startingAt: 0)
                let tokens = "\(run.usage.totalTokens) tok".padding(
                    toLength: 11, withPad: " ", startingAt: 0)
                say(
                    "\(run.id)  \(status) \(formatter.string(from: run.createdAt))  \(tokens) \(run.goal.clipped(to: 60))"
                )
            }
        }
    }

    /// The newest `limit` runs on a server, page after page.
    static func list(_ statuses: Set<RunStatus>, limit: Int, on server: RemoteServer) async throws -> [RunReport] {
        var runs: [RunReport] = []
        var cursor: String?
        repeat {
            let page = try await server.call { client in
                try await client.listRuns(
                    query: .init(
                        status: statuses.isEmpty
                            ? nil : statuses.sorted { $0.rawValue < $1.rawValue }.compactMap { .init(rawValue: $0.rawValue) },
                        limit: min(200, limit - runs.count), cursor: cursor)
                ).ok.body.json
            }
            runs += try page.runs.map(RemoteServer.report)
            cursor = page.nextCursor
        } while cursor != nil && runs.count < limit
        return runs
    }
}
