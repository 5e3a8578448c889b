/// The one error type Troupe throws: a stable ``Code``, a message a user can act on, and the cause.
///
/// Codes are a public contract: the CLI maps them to exit statuses and the API to error JSON.
public struct TroupeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A stable, machine-readable error code such as `planInvalid` or `journalConflict`.
    public struct Code: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// Text that should be JSON is not.
        public static let invalidJSON = Code(rawValue: "invalidJSON")
        /// A value does not satisfy a JSON Schema.
        public static let schemaViolation = Code(rawValue: "schemaViolation")
        /// The user's input (flags, goal, configuration) is not acceptable.
        public static let invalidInput = Code(rawValue: "invalidInput")
        /// Configuration is missing or inconsistent.
        public static let configuration = Code(rawValue: "configuration")
        /// The model's plan failed validation after all repairs.
        public static let planInvalid = Code(rawValue: "planInvalid")
        /// A step failed and no replanning was left.
        public static let stepFailed = Code(rawValue: "stepFailed")
        /// A step exceeded its time limit.
        public static let stepTimeout = Code(rawValue: "stepTimeout")
        /// The model answered with something that cannot be used (no choices, cut-off output, …).
        public static let malformedModelResponse = Code(rawValue: "malformedModelResponse")
        /// The provider's content filter stopped the answer.
        public static let contentFiltered = Code(rawValue: "contentFiltered")
        /// The model declined to answer (OpenAI's `refusal`); the message carries its words.
        /// Asking again the same way gets the same answer: not retried, not repaired.
        public static let modelRefused = Code(rawValue: "modelRefused")
        /// The model API refused the request or failed (HTTP status in `details`).
        public static let modelAPI = Code(rawValue: "modelAPI")
        /// The model API rejected the credentials.
        public static let authentication = Code(rawValue: "authentication")
        /// The model API is rate limiting us.
        public static let rateLimited = Code(rawValue: "rateLimited")
        /// The model endpoint could not be reached or did not answer in time.
        public static let transport = Code(rawValue: "transport")
        /// A call did not finish before its deadline.
        public static let timeout = Code(rawValue: "timeout")
        /// A circuit breaker refused the call: the model failed too often lately and is left alone
        /// for a cool-down (a fallback model may answer instead).
        public static let circuitOpen = Code(rawValue: "circuitOpen")
        /// A tool is not known or not allowed for this step.
        public static let unknownTool = Code(rawValue: "unknownTool")
        /// A tool failed; the message is what the model sees.
        public static let toolFailed = Code(rawValue: "toolFailed")
        /// A path or resource is outside what a tool may touch.
        public static let accessDenied = Code(rawValue: "accessDenied")
        /// A run, event or other record does not exist.
        public static let notFound = Code(rawValue: "notFound")
        /// Another writer appended to the journal first (optimistic concurrency).
        public static let journalConflict = Code(rawValue: "journalConflict")
        /// Another live process holds the run's lease.
        public static let leaseHeld = Code(rawValue: "leaseHeld")
        /// The event is not valid in the run's current state.
        public static let invalidTransition = Code(rawValue: "invalidTransition")
        /// The store failed (disk, schema, corruption): retrying will not help.
        public static let storage = Code(rawValue: "storage")
        /// The store is unavailable for now (its database is locked by another process, its
        /// connection dropped): retrying may succeed.
        public static let storageUnavailable = Code(rawValue: "storageUnavailable")
        /// The run was cancelled.
        public static let cancelled = Code(rawValue: "cancelled")
        /// A bug in Troupe: please report it.
        public static let `internal` = Code(rawValue: "internal")
    }

    public var code: Code
    /// A message safe to show a user, saying what happened and what to do next.
    public var message: String
    /// Machine-readable extras (HTTP status, endpoint, path, …).
    public var details: [String: String]
    /// The underlying error's description, if any (never a secret).
    public var underlying: String?

    public init(_ code: Code, _ message: String, details: [String: String] = [:], underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.details = details
        self.underlying = underlying.map { String(describing: $0) }
    }

    public var description: String { "\(code): \(message)" }

    /// Wraps any error as a ``TroupeError``, keeping it unchanged if it already is one.
    public static func wrap(_ error: any Error, as code: Code = .internal, _ message: String? = nil) -> TroupeError {
        if let error = error as? TroupeError { return error }
        if error is CancellationError { return TroupeError(.cancelled, "The operation was cancelled.") }
        return TroupeError(code, message ?? String(describing: error), underlying: error)
    }
}

extension TroupeError: Codable {}
