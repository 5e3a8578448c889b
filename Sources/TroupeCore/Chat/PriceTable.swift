public import Foundation

/// What a model's tokens cost, in US dollars per million tokens.
public struct ModelPrice: Sendable, Hashable, Codable {
    public var input: Decimal
    /// Input tokens the provider served from its prompt cache (a part of the input tokens).
    public var cachedInput: Decimal
    public var output: Decimal

    public init(input: Decimal, cachedInput: Decimal, output: Decimal) {
        self.input = input
        self.cachedInput = cachedInput
        self.output = output
    }

    /// The cost of `usage`: the uncached input, the cached input and the output, each at its price.
    public func cost(of usage: Usage) -> Decimal {
        let cached = min(max(0, usage.cachedTokens), max(0, usage.inputTokens))
        let uncached = max(0, usage.inputTokens) - cached
        let total = Decimal(uncached) * input + Decimal(cached) * cachedInput + Decimal(max(0, usage.outputTokens)) * output
        return total / Decimal(1_000_000)
    }

    /// `INPUT/CACHED/OUTPUT` (dollars per million tokens, e.g. `2.50/1.25/10`), as the
    /// `prices` setting writes a price; `nil` if it is not three non-negative numbers.
    public init?(text: String) {
        let parts = text.split(separator: "/").map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 3 else { return nil }
        // ASCII digits with at most one point, at most a million dollars per million tokens.
        let numbers = parts.compactMap { part -> Decimal? in
            let digits = part.unicodeScalars
            guard !part.isEmpty, part.count <= 16, digits.allSatisfy({ ("0"..."9").contains($0) || $0 == "." }),
                part.filter({ $0 == "." }).count <= 1, part != "."
            else { return nil }
            guard let number = Decimal(string: part, locale: Locale(identifier: "en_US_POSIX")), number <= 1_000_000 else { return nil }
            return number
        }
        guard numbers.count == 3 else { return nil }
        self.init(input: numbers[0], cachedInput: numbers[1], output: numbers[2])
    }
}

/// Prices per model, which turn a run's usage into money (`Decimal`, never floating point).
///
/// A model is priced by its exact name, else — for a dated version, `NAME-YYYY-MM-DD` or
/// `NAME-MMDD` (`gpt-4-0613`) — by `NAME` (`gpt-4o-2024-08-06` takes `gpt-4o`'s price). Anything else is
/// **unpriced** — counted apart, never as free: `o3-pro` or `gpt-4o-audio-preview` is not `o3`
/// or `gpt-4o`.
public struct PriceTable: Sendable, Hashable {
    public var prices: [String: ModelPrice]
    /// Where the prices come from (the date of the built-in ones).
    public var source: String

    public init(prices: [String: ModelPrice], source: String) {
        self.prices = prices
        self.source = source
    }

    /// The price of `model`, if the table has it.
    public func price(of model: String) -> ModelPrice? {
        if let price = prices[model] { return price }
        for suffix in [10, 4] where model.count > suffix + 1 {
            let date = model.suffix(suffix)
            let shape = suffix == 10 ? "dddd-dd-dd" : "dddd"
            guard zip(date, shape).allSatisfy({ $1 == "d" ? $0.isASCII && $0.isNumber : $0 == $1 }),
                model.dropLast(suffix).hasSuffix("-")
            else { continue }
            if let price = prices[String(model.dropLast(suffix + 1))] { return price }
        }
        return nil
    }

    /// The cost of `usage` by `model`, or `nil` when the model is unpriced.
    public func cost(of usage: Usage, model: String) -> Decimal? {
        price(of: model)?.cost(of: usage)
    }

    /// This table with `prices` added (a model named in both takes the new price).
    public func merging(_ prices: [String: ModelPrice], source: String) -> PriceTable {
        PriceTable(prices: self.prices.merging(prices) { $1 }, source: prices.isEmpty ? self.source : self.source + " + " + source)
    }

    /// OpenAI's list prices per million tokens (standard tier) as published on 2025-08-15
    /// (written as text: a `Decimal` literal would pass through a `Double`).
    /// Check them against your provider before relying on them; override or add models with
    /// the `prices` setting.
    public static let builtIn = PriceTable(
        prices: [
            "gpt-5": ModelPrice(text: "1.25/0.125/10")!,
            "gpt-5-mini": ModelPrice(text: "0.25/0.025/2")!,
            "gpt-5-nano": ModelPrice(text: "0.05/0.005/0.4")!,
            "gpt-4.1": ModelPrice(text: "2/0.5/8")!,
            "gpt-4.1-mini": ModelPrice(text: "0.4/0.1/1.6")!,
            "gpt-4.1-nano": ModelPrice(text: "0.1/0.025/0.4")!,
            "gpt-4o": ModelPrice(text: "2.5/1.25/10")!,
            "gpt-4o-2024-05-13": ModelPrice(text: "5/5/15")!,
            "gpt-4o-mini": ModelPrice(text: "0.15/0.075/0.6")!,
            "o3": ModelPrice(text: "2/0.5/8")!,
            "o3-mini": ModelPrice(text: "1.1/0.55/4.4")!,
            "o4-mini": ModelPrice(text: "1.1/0.275/4.4")!,
        ],
        source: "OpenAI list prices of 2025-08-15")
}
