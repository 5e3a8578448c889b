import Foundation
import Testing
import Troupe
import TroupeSettings
import TroupeTesting

/// The price table and what runs cost: exact decimals, dated model names, unpriced models
/// counted apart, the `prices` setting, and the cost in `troupe show`.
@Suite struct CostTests {
    static func decimal(_ text: String) -> Decimal { Decimal(string: text, locale: Locale(identifier: "en_US_POSIX"))! }

    @Test func pricesAreFoundByNameOrDatedVersionAndNeverMadeUp() throws {
        let table = PriceTable.builtIn
        #expect(table.price(of: "gpt-4o") == ModelPrice(text: "2.5/1.25/10"))
        #expect(table.price(of: "gpt-4o-2024-08-06") == table.price(of: "gpt-4o"), "a dated version")
        #expect(table.price(of: "gpt-4o-mini-2024-07-18") == table.price(of: "gpt-4o-mini"), "the longest name wins")
        #expect(table.price(of: "gpt-4") == nil && table.price(of: "llama-3.1-70b") == nil && table.price(of: "gpt-4oo") == nil)
        #expect(table.cost(of: Usage(inputTokens: 10, outputTokens: 10), model: "mystery") == nil, "unpriced, not free")
        // Only a date extends a name: other models that share a prefix are not that model.
        for other in ["o3-pro", "o3-deep-research", "gpt-4o-audio-preview", "gpt-5-pro", "gpt-4o-20240806", "gpt-4o-2024-8-6"] {
            #expect(table.price(of: other) == nil, "\(other)")
        }
        #expect(table.price(of: "gpt-4o-2024-05-13")?.input == 5, "a dated version with its own price")
        #expect(table.price(of: "o3-2025-04-16") == table.price(of: "o3"))
        let mine = table.merging(["my-llama": ModelPrice(text: "1/1/1")!], source: "test")
        #expect(mine.price(of: "my-llama-70b") == nil && mine.price(of: "my-llama-2025") != nil)
    }

    @Test func aCallsCostIsExactWithCachedTokensAtTheirPrice() throws {
        let price = try #require(ModelPrice(text: "0.15/0.075/0.6"))
        // 1,000 uncached + 200 cached input, 300 output:
        // (1000 × 0.15 + 200 × 0.075 + 300 × 0.6) / 1e6 = (150 + 15 + 180) / 1e6 = 0.000345
        #expect(price.cost(of: Usage(inputTokens: 1200, outputTokens: 300, cachedTokens: 200)) == Self.decimal("0.000345"))
        #expect(price.cost(of: Usage(inputTokens: 3, outputTokens: 0, cachedTokens: 9)) == Self.decimal("0.000000225"), "cached ≤ input")
        for bad in [
            "1/2", "a/b/c", "1/2/-3", "1/2/3/4", "1..2/3/4", "", "2½/1/10", "1²/1/1", "٣/1/1", "1e3/1/1", "./1/1",
            String(repeating: "9", count: 200) + "/1/1", "1000001/1/1",
        ] {
            #expect(ModelPrice(text: bad) == nil, "\(bad)")
        }
    }

    /// Each call is priced on its own and the prices added up, in the run document and in
    /// `troupe usage` alike — also when a provider reports more cached tokens than input.
    @Test func aRunsCostAddsUpItsCallsPricedOneByOne() async throws {
        let store = InMemoryRunStore()
        let id = RunID.make()
        let created = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(model: "m"), at: Date())
        var events: [RunEvent] = []
        for (index, usage) in [Usage(inputTokens: 10, outputTokens: 0, cachedTokens: 20), Usage(inputTokens: 100, outputTokens: 0)]
            .enumerated()
        {
            let key = ActivityKey(step: "plan", attempt: 1, callIndex: index + 1)
            events += [
                .activityStarted(key: key, kind: .model(purpose: .plan)),
                .activityCompleted(
                    key: key, result: .model(ChatResponse(message: .assistant("{}"), finishReason: .stop, usage: usage, model: "m"))),
            ]
        }
        _ = try await store.append(events, to: id, expectedSequence: created.lastSequence, at: Date())
        let prices = PriceTable(prices: ["m": ModelPrice(text: "1/0/0")!], source: "test")
        let machine = try RunStateMachine(runID: id, replaying: try await store.events(of: id))
        let report = RunReport(summary: try await store.requireRun(id), machine: machine, prices: prices)
        #expect(report.cost?.usd == "0.0001" && report.cost?.byModel.first?.usd == "0.0001", "\(String(describing: report.cost))")
        let usage = try await UsageSummary.collect(from: store, by: .model, prices: prices)
        #expect(usage.total.usd == "0.0001")
    }

    /// A run whose last write came from a host whose clock is behind still counts its calls.
    @Test func usageCountsACallWhenALaterWriteHadAnEarlierClock() async throws {
        let store = InMemoryRunStore()
        let id = RunID.make()
        let call = Date()
        let created = try await store.createRun(id: id, goal: "g", configuration: RunConfiguration(model: "gpt-4o"), at: call - 120)
        let key = ActivityKey(step: "plan", attempt: 1, callIndex: 1)
        let answer = ChatResponse(
            message: .assistant("{}"), finishReason: .stop, usage: Usage(inputTokens: 10, outputTokens: 1), model: "gpt-4o")
        let sequence = try await store.append(
            [.activityStarted(key: key, kind: .model(purpose: .plan)), .activityCompleted(key: key, result: .model(answer))], to: id,
            expectedSequence: created.lastSequence, at: call)
        _ = try await store.append([.runCancelled(reason: "operator")], to: id, expectedSequence: sequence, at: call - 60)
        let usage = try await UsageSummary.collect(from: store, since: call - 30, by: .model, prices: .builtIn)
        #expect(usage.total.modelCalls == 1)
    }

    @Test func thePricesSettingAddsAndOverrides() async throws {
        func load(_ overrides: [String]) async throws -> TroupeSettings {
            try await TroupeSettings.load(overrides: overrides, environment: [:], directory: "/", readingImplicitFile: false)
        }
        let prices = try await load(["prices=gpt-4o=1/0.5/2, my-llama=0.1/0.1/0.2"]).prices
        #expect(
            prices.price(of: "gpt-4o") == ModelPrice(text: "1/0.5/2") && prices.price(of: "my-llama") == ModelPrice(text: "0.1/0.1/0.2"))
        #expect(prices.price(of: "gpt-4o-mini") == PriceTable.builtIn.price(of: "gpt-4o-mini"))
        #expect(prices.source.contains("2025-08-15") && prices.source.contains("prices setting"))
        await #expect {
            _ = try await load(["prices=gpt-4o"])
        } throws: { error in
            (error as? TroupeError)?.message.contains("MODEL=INPUT/CACHED/OUTPUT") == true
        }
    }

    /// A run against the mock: its cost equals the sum of its calls' costs from the table, to
    /// the last digit, in `troupe show --json` and (rounded) in its text; another table changes
    /// it; a model without a price is unpriced.
    @Test func aRunsCostIsTheSumOfItsCallsCosts() async throws {
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 2)) { mock in
            try await withTemporaryDirectory { directory in
                let store = "sqlite:\(directory)/runs.db"
                func run(_ extra: [String]) async throws -> JSONValue {
                    let run = try await CLIProcess.runApart(
                        ["run", "Say hello", "--base-url", mock.baseURL, "--store", store, "--json"] + extra, directory: directory)
                    #expect(run.status == 0, "\(run.errors)")
                    return try JSONValue.parse(run.output)
                }
                let report = try await run([])
                let cost = try #require(report["cost"])
                let models = try #require(cost["byModel"]?.arrayValue)
                var expected = Decimal(0)
                var calls = 0
                for model in models {
                    let usage = Usage(
                        inputTokens: model["usage"]?["inputTokens"]?.intValue ?? -1,
                        outputTokens: model["usage"]?["outputTokens"]?.intValue ?? -1,
                        cachedTokens: model["usage"]?["cachedTokens"]?.intValue ?? -1)
                    let name = try #require(model["model"]?.stringValue)
                    expected += try #require(PriceTable.builtIn.cost(of: usage, model: name), "\(name) is priced")
                    calls += model["modelCalls"]?.intValue ?? 0
                }
                #expect(calls == report["modelCalls"]?.intValue && calls >= 4, "planner and executor calls")
                #expect(cost["usd"]?.stringValue.map(Self.decimal) == expected && expected > 0, "\(cost)")
                #expect(cost["unpricedModelCalls"]?.intValue == 0)
                let steps = try #require(report["steps"]?.arrayValue)
                let stepsTotal = steps.compactMap { $0["cost"]?["usd"]?.stringValue }.map(Self.decimal).reduce(0, +)
                #expect(stepsTotal <= expected && stepsTotal > 0, "the steps' calls, without the planner's")

                let runID = try #require(report["id"]?.stringValue)
                let shown = try await CLIProcess.runApart(["show", runID, "--store", store], directory: directory)
                #expect(
                    shown.output.contains("Cost: $") && shown.output.contains("prices: OpenAI list prices of 2025-08-15"), "\(shown.output)"
                )

                let cheaper = try await CLIProcess.runApart(
                    ["show", runID, "--store", store, "--json", "--set", "prices=gpt-4o-mini=0/0/0"], directory: directory)
                #expect(try JSONValue.parse(cheaper.output)["cost"]?["usd"]?.stringValue == "0")

                let unknown = try await run(["--model", "mystery-model"])
                #expect(unknown["cost"]?["usd"]?.stringValue == "0")
                #expect(unknown["cost"]?["unpricedModelCalls"]?.intValue == unknown["modelCalls"]?.intValue)

                // `troupe usage` adds the same calls up: to the digit, by model, by day.
                let usage = try await CLIProcess.runApart(["usage", "--store", store, "--json"], directory: directory)
                let summary = try JSONValue.parse(usage.output)
                #expect(summary["total"]?["usd"]?.stringValue.map(Self.decimal) == expected, "\(usage.output)")
                #expect(summary["runs"]?.intValue == 2)
                let rows = try #require(summary["rows"]?.arrayValue)
                #expect(rows.compactMap { $0["key"]?.stringValue } == ["gpt-4o-mini", "mystery-model"])
                #expect(rows.last?["unpricedModelCalls"]?.intValue == unknown["modelCalls"]?.intValue)
                #expect(summary["total"]?["modelCalls"]?.intValue == calls + (unknown["modelCalls"]?.intValue ?? 0))
                let byDay = try JSONValue.parse(
                    try await CLIProcess.runApart(["usage", "--store", store, "--json", "--by", "day"], directory: directory).output)
                let days = [UsageSummary.day(Date()), UsageSummary.day(Date().addingTimeInterval(-120))]  // around midnight
                #expect(byDay["rows"]?.arrayValue?.first?["key"]?.stringValue.map(days.contains) == true)
                let later = try await CLIProcess.runApart(
                    ["usage", "--store", store, "--since", "2999-01-01"], directory: directory)
                #expect(later.output.contains("No model calls in that span."))
                let text = try await CLIProcess.runApart(["usage", "--store", store], directory: directory)
                #expect(
                    text.output.contains("gpt-4o-mini") && text.output.contains("unpriced") && text.output.contains("2 runs"),
                    "\(text.output)")
                let bad = try await CLIProcess.runApart(["usage", "--store", store, "--by", "week"], directory: directory)
                #expect(bad.status == 6 && bad.errors.contains("--by must be model, day or tenant"))
            }
        }
    }
}
