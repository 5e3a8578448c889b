import Foundation

/// What a model server said about its rate limits with an answer: the `x-ratelimit-*` headers
/// that OpenAI and many compatible servers send. A rate limiter uses it to slow down before the
/// server answers 429. Not journaled.
public struct RateLimitStatus: Sendable, Hashable {
    /// Requests left in the current window, and seconds until the window resets.
    public var remainingRequests: Int?
    public var requestsResetSeconds: Double?
    /// Tokens left in the current window, and seconds until the window resets.
    public var remainingTokens: Int?
    public var tokensResetSeconds: Double?

    public init(
        remainingRequests: Int? = nil,
        requestsResetSeconds: Double? = nil,
        remainingTokens: Int? = nil,
        tokensResetSeconds: Double? = nil
    ) {
        self.remainingRequests = remainingRequests
        self.requestsResetSeconds = requestsResetSeconds
        self.remainingTokens = remainingTokens
        self.tokensResetSeconds = tokensResetSeconds
    }

    /// Reads `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`,
    /// `x-ratelimit-remaining-tokens` and `x-ratelimit-reset-tokens` through `header` (which
    /// looks a header up by its lower-case name); `nil` when none is there or readable.
    public init?(header: (String) -> String?) {
        func number(_ name: String) -> Int? { header(name).flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
        func reset(_ name: String) -> Double? { header(name).flatMap(Self.seconds(in:)) }
        self.init(
            remainingRequests: number("x-ratelimit-remaining-requests"),
            requestsResetSeconds: reset("x-ratelimit-reset-requests"),
            remainingTokens: number("x-ratelimit-remaining-tokens"),
            tokensResetSeconds: reset("x-ratelimit-reset-tokens")
        )
        if self == RateLimitStatus() { return nil }
    }

    /// Seconds in a reset header: a Go-style duration as OpenAI sends it (`20ms`, `1s`, `6m0s`,
    /// `1h2m3.5s`) or a plain number of seconds (`2.5`); `nil` for anything else.
    public static func seconds(in text: String) -> Double? {
        let text = text.trimmingCharacters(in: .whitespaces)
        if let plain = Double(text) { return plain >= 0 && plain.isFinite ? plain : nil }
        var total = 0.0
        var rest = Substring(text)
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isNumber || $0 == "." }
            let unit = rest.dropFirst(digits.count).prefix { $0.isLetter || $0 == "µ" }
            guard let value = Double(digits), !unit.isEmpty else { return nil }
            let scale: Double
            switch unit {
            case "h": scale = 3_600
            case "m": scale = 60
            case "s": scale = 1
            case "ms": scale = 1e-3
            case "us", "µs": scale = 1e-6
            case "ns": scale = 1e-9
            default: return nil
            }
            total += value * scale
            rest = rest.dropFirst(digits.count + unit.count)
        }
        return text.isEmpty ? nil : total
    }
}
