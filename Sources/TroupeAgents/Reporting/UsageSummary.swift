public import Foundation
public import TroupeCore
public import TroupeStore

/// Tokens and cost of the model calls in a store, over a time span, grouped by model, by day or
/// by tenant: what `troupe usage` prints and `GET /v1/usage` answers.
///
/// Read from the journals: each model answer counts on the day it was journaled (UTC), under
/// the model that gave it and the run's tenant, costed with ``prices``. Runs not updated since
/// an hour before the span's start are skipped unread.
public struct UsageSummary: Sendable, Codable {
    /// How calls are grouped.
    public enum Grouping: String, Sendable, Codable, CaseIterable {
        case model, day, tenant
    }

    /// One group's calls.
    public struct Row: Sendable, Codable, Equatable {
        /// The model, the day (`2026-12-08`, UTC) or the tenant.
        public var key: String
        public var modelCalls: Int = 0
        public var inputTokens: Int = 0
        public var cachedTokens: Int = 0
        public var outputTokens: Int = 0
        /// The priced calls' cost in US dollars, exact (decimal text).
        public var usd: String = "0"
        /// Calls whose model has no price (not in ``usd``).
        public var unpricedModelCalls: Int = 0

        public init(key: String) {
            self.key = key
        }
    }

    public var by: Grouping
    public var tenant: String?
    public var since: Date?
    public var until: Date?
    /// Runs with at least one model call in the span.
    public var runs: Int
    /// In key order.
    public var rows: [Row]
    public var total: Row
    /// The price table used.
    public var prices: String

    /// The usage of the runs in `store` (of `tenant`, or every tenant's) from `since` to `until`.
    ///
    /// - Parameter maxRuns: the most runs whose journals are read; beyond them the answer is an
    ///   `invalidInput` error asking for a shorter span (`nil`: no limit).
    public static func collect(
        from store: any RunStore, tenant: String? = nil, since: Date? = nil, until: Date? = nil, by grouping: Grouping,
        prices: PriceTable, maxRuns: Int? = nil
    ) async throws -> UsageSummary {
        var read = 0
        var tallies: [String: (row: Row, cost: Decimal)] = [:]
        var total = (row: Row(key: "total"), cost: Decimal(0))
        var runs = 0
        var page = RunQuery(createdBefore: until, limit: 500, tenant: tenant)
        while true {
            let summaries = try await store.runs(page)
            for summary in summaries {
                // A run's last write may carry an earlier clock than a call before it (another
                // host's): an hour of margin before a run is skipped unread.
                if let since, summary.updatedAt < since.addingTimeInterval(-Self.clockMargin) { continue }
                try Task.checkCancellation()
                read += 1
                if let maxRuns, read > maxRuns {
                    throw TroupeError(
                        .invalidInput,
                        "More than \(maxRuns) runs have calls in that span: ask for a shorter one (since, until) or one tenant.",
                        details: ["field": "since"])
                }
                var counted = false
                for record in try await store.events(of: summary.id) {
                    guard case .activityCompleted(_, .model(let response)) = record.event else { continue }
                    if let since, record.recordedAt < since { continue }
                    if let until, record.recordedAt >= until { continue }
                    let model = response.model.isEmpty ? summary.configuration.model : response.model
                    let key: String
                    switch grouping {
                    case .model: key = model
                    case .day: key = Self.day(record.recordedAt)
                    case .tenant: key = summary.configuration.owningTenant
                    }
                    let cost = prices.cost(of: response.usage, model: model)
                    Self.add(response.usage, cost: cost, to: &tallies[key, default: (Row(key: key), 0)])
                    Self.add(response.usage, cost: cost, to: &total)
                    counted = true
                }
                if counted { runs += 1 }
            }
            guard summaries.count == page.limit, let last = summaries.last else { break }
            page.after = RunPosition(last)
        }
        let rows = tallies.values.sorted { $0.row.key < $1.row.key }.map { tally in
            var row = tally.row
            row.usd = RunReport.CostReport.text(tally.cost)
            return row
        }
        total.row.usd = RunReport.CostReport.text(total.cost)
        return UsageSummary(
            by: grouping, tenant: tenant, since: since, until: until, runs: runs, rows: rows, total: total.row, prices: prices.source)
    }

    private static func add(_ usage: Usage, cost: Decimal?, to tally: inout (row: Row, cost: Decimal)) {
        tally.row.modelCalls += 1
        tally.row.inputTokens += usage.inputTokens
        tally.row.cachedTokens += usage.cachedTokens
        tally.row.outputTokens += usage.outputTokens
        if let cost { tally.cost += cost } else { tally.row.unpricedModelCalls += 1 }
    }

    /// How far hosts' clocks may disagree for ``collect(from:tenant:since:until:by:prices:maxRuns:)``.
    static let clockMargin: TimeInterval = 3600

    /// `2026-12-08`: the UTC day of `date`.
    public static func day(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day], from: date)
        return String(format: "%04d-%02d-%02d", parts.year ?? 0, parts.month ?? 0, parts.day ?? 0)
    }
}

extension UsageSummary {
    /// Pretty-printed JSON with ISO-8601 dates and sorted keys.
    public func json() throws -> String {
        let encoder = JSONCoding.encoder()
        encoder.outputFormatting.insert(.prettyPrinted)
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
