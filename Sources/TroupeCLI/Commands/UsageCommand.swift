import ArgumentParser
import Foundation
import Troupe

struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage",
        abstract: "Tokens and cost of the stored runs' model calls, by model, day or tenant.",
        discussion: """
            Each model answer counts on the day it was journaled (UTC), costed with the price table (built-in prices \
            and the prices setting; docs/OBSERVABILITY.md). Models without a price are counted apart, never as free.

            Examples: troupe usage --since 2026-12-01 --by day · troupe usage --tenant acme --by model --json
            """
    )

    @Option(name: .long, help: "Only this tenant's runs (default: every tenant's).")
    var tenant: String?

    @Option(name: .long, help: "From this day (YYYY-MM-DD, UTC) or instant (ISO 8601) on.")
    var since: String?

    @Option(name: .long, help: "Before this day (YYYY-MM-DD, UTC) or instant (ISO 8601).")
    var until: String?

    @Option(name: .long, help: "Group by model, day or tenant (default: model).")
    var by: String = "model"

    @Flag(name: .long, help: "Print one JSON document: by, tenant, since, until, runs, rows[], total, prices.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await reportingErrors(verbose: global.verbose) {
            guard let grouping = UsageSummary.Grouping(rawValue: by) else {
                throw TroupeError(.invalidInput, "--by must be model, day or tenant (got \(by)).")
            }
            let since = try since.map { try Self.instant($0, flag: "--since") }
            let until = try until.map { try Self.instant($0, flag: "--until") }
            if let tenant { _ = try TenantName.validated(tenant) }
            let summary = try await global.withStore { opened in
                try await UsageSummary.collect(
                    from: opened.store, tenant: tenant, since: since, until: until, by: grouping, prices: opened.prices)
            }
            if json {
                print(try summary.json())
            } else {
                say(Self.render(summary))
            }
        }
    }

    /// A day (`2026-12-08`, midnight UTC) or an ISO 8601 instant.
    static func instant(_ text: String, flag: String) throws -> Date {
        if let date = ISO8601DateFormatter().date(from: text) { return date }
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        if let date = day.date(from: text) { return date }
        throw TroupeError(.invalidInput, "\(flag) must be a day (YYYY-MM-DD) or an ISO 8601 instant (got \(text)).")
    }

    static func render(_ summary: UsageSummary) -> String {
        guard summary.total.modelCalls > 0 else { return "No model calls in that span." }
        let header = [summary.by.rawValue, "calls", "input", "cached", "output", "cost (USD)"]
        let rows = (summary.rows + [summary.total]).map { row in
            [
                row.key, "\(row.modelCalls)", "\(row.inputTokens)", "\(row.cachedTokens)", "\(row.outputTokens)",
                ShowCommand.dollars(row.usd) + (row.unpricedModelCalls > 0 ? " + \(row.unpricedModelCalls) unpriced" : ""),
            ]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == 0
                    ? cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[index] - cell.count) + cell
            }.joined(separator: "  ")
        }
        var lines = [line(header)] + rows.dropLast().map(line)
        lines.append(line(rows.last!))
        lines.insert(String(repeating: "─", count: lines[0].count), at: lines.count - 1)
        lines.append("\(summary.runs) run\(summary.runs == 1 ? "" : "s") · prices: \(summary.prices)")
        return lines.joined(separator: "\n")
    }
}
