import Foundation

/// Identifies a run. Printed as `run_` followed by 26 lowercase hex digits and dashes of a UUID.
public struct RunID: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }

    /// A new random id.
    public static func make() -> RunID { RunID("run_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")) }

    public var description: String { rawValue }
    public static func < (lhs: RunID, rhs: RunID) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// The deterministic key of an activity (a model or tool call): `runID/step/attempt/callIndex`.
///
/// The planner's calls use the step name `plan` (reserved: no plan step may be called so), with
/// the planning round as attempt. The key is derived from the journal alone, so a resumed run
/// computes the same keys and finds recorded results.
public struct ActivityKey: Sendable, Hashable, Codable, CustomStringConvertible, Comparable {
    public var step: String
    public var attempt: Int
    public var callIndex: Int

    public init(step: String, attempt: Int, callIndex: Int) {
        self.step = step
        self.attempt = attempt
        self.callIndex = callIndex
    }

    public var description: String { "\(step)/\(attempt)/\(callIndex)" }

    /// The key as URLs and `troupe approve --call` take it: `step:attempt:callIndex` (a step ID
    /// never contains `:` or `/`).
    public var callKey: String { "\(step):\(attempt):\(callIndex)" }

    /// A key written as ``callKey`` (`s1:1:2`) or as ``description`` (`s1/1/2`); `nil` for anything else.
    public init?(parsing text: String) {
        let separator: Character = text.contains(":") ? ":" : "/"
        let parts = text.split(separator: separator, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].count <= 64, let attempt = Int(parts[1]), let index = Int(parts[2]),
            attempt >= 0, index >= 0
        else { return nil }
        self.init(step: String(parts[0]), attempt: attempt, callIndex: index)
    }

    /// The full key, unique across runs: usable as an idempotency key outside Troupe.
    public func qualified(by run: RunID) -> String { "\(run.rawValue)/\(description)" }

    public static func < (lhs: ActivityKey, rhs: ActivityKey) -> Bool {
        (lhs.step, lhs.attempt, lhs.callIndex) < (rhs.step, rhs.attempt, rhs.callIndex)
    }

    /// The step name used for planner calls. No plan may name a step so (``reservedStepIDs``).
    public static let planStep = "plan"

    /// Step ids a plan may not use, because activity keys of Troupe's own use them.
    public static let reservedStepIDs: Set<String> = [planStep]
}
