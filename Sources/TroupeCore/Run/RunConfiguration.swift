/// How a run is carried out. Recorded with the run (in `runCreated`) so `resume` repeats it;
/// it never holds secrets — API keys come from the environment each time.
public struct RunConfiguration: Sendable, Hashable, Codable {
    /// The model name sent to the API (`gpt-4o-mini`, `llama3`, …).
    public var model: String
    /// The OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`; `nil` means the default.
    public var baseURL: String?
    /// The directory the file tools are jailed to.
    public var workspace: String
    /// The tool groups enabled for the run (`fs`, …).
    public var tools: [String]
    /// The most steps a plan may have.
    public var maxSteps: Int
    /// How many ready steps may run at the same time.
    public var maxConcurrentSteps: Int
    /// Model calls per step before the executor asks for a final answer without tools.
    public var maxIterations: Int
    /// How many times an invalid plan is sent back to the model for repair.
    public var maxPlanRepairs: Int
    /// How many times the run is replanned after a failed step.
    public var maxReplans: Int
    /// Failed model calls (after the model layer's own retries) tolerated per step attempt.
    public var maxModelCallFailures: Int
    /// Wall time a step may take, in seconds.
    public var stepTimeoutSeconds: Double
    /// Stream model answers (SSE) instead of waiting for whole responses.
    public var stream: Bool
    public var temperature: Double?
    /// Output token cap per model call.
    public var maxTokens: Int?
    /// The rules the run's tools were given when it started (tool policy, shell and web
    /// policies, protected paths, MCP server fingerprints), as the settings layer journals them
    /// (`TroupeSettings.ToolRules`); `resume` applies these rather than the current settings.
    /// `nil` in runs journaled before they were recorded, and in runs made without settings.
    public var toolRules: JSONValue?
    /// The labels its creator gave the run (the API's `metadata`), by which listings filter.
    public var metadata: [String: String]?
    /// For a run created through the API with an `Idempotency-Key`: the SHA-256 of the request
    /// that created it, so that a retry with the same key and body gets this run back and one
    /// with another body is refused.
    public var requestDigest: String?
    /// The tenant the run belongs to (`nil`: ``RunConfiguration/defaultTenant``, the CLI's local
    /// runs). Set by the store handle of the caller who created it; stores keep it in a column
    /// by which every tenant-scoped read and claim filters.
    public var tenant: String?
    /// Offer the run's agents only the tools that only read (`true`; `nil` or `false`: every
    /// tool the policy permits). The API's `readOnly` and the CLI's `--read-only`.
    public var readOnly: Bool?
    /// The longest tool output the run's model is sent, in characters (`nil`: the executor's
    /// default, 64,000); what a tenant's `maxToolOutputCharacters` sets.
    public var maxToolOutputCharacters: Int?

    /// The tenant of runs made without one: the CLI's local runs, and every run of a server
    /// without keys.
    public static let defaultTenant = "default"

    /// The tenant the run belongs to.
    public var owningTenant: String { tenant ?? Self.defaultTenant }

    public init(
        model: String = "gpt-4o-mini",
        baseURL: String? = nil,
        workspace: String = ".",
        tools: [String] = ["fs"],
        maxSteps: Int = 10,
        maxConcurrentSteps: Int = 4,
        maxIterations: Int = 8,
        maxPlanRepairs: Int = 2,
        maxReplans: Int = 2,
        maxModelCallFailures: Int = 2,
        stepTimeoutSeconds: Double = 300,
        stream: Bool = false,
        temperature: Double? = nil,
        maxTokens: Int? = nil,
        toolRules: JSONValue? = nil,
        metadata: [String: String]? = nil
    ) {
        self.model = model
        self.baseURL = baseURL
        self.workspace = workspace
        self.tools = tools
        self.maxSteps = maxSteps
        self.maxConcurrentSteps = maxConcurrentSteps
        self.maxIterations = maxIterations
        self.maxPlanRepairs = maxPlanRepairs
        self.maxReplans = maxReplans
        self.maxModelCallFailures = maxModelCallFailures
        self.stepTimeoutSeconds = stepTimeoutSeconds
        self.stream = stream
        self.temperature = temperature
        self.maxTokens = maxTokens
        self.toolRules = toolRules
        self.metadata = metadata
    }

    /// Checks the limits, with a message naming the bad field.
    public func validated() throws(TroupeError) -> RunConfiguration {
        func require(_ condition: Bool, _ message: String) throws(TroupeError) {
            if !condition { throw TroupeError(.configuration, message) }
        }
        try require(!model.isEmpty, "The model name is empty: pass --model.")
        try require((1...100).contains(maxSteps), "max steps must be between 1 and 100.")
        try require((1...64).contains(maxConcurrentSteps), "max concurrent steps must be between 1 and 64.")
        try require((1...100).contains(maxIterations), "max iterations must be between 1 and 100.")
        try require((0...10).contains(maxPlanRepairs), "max plan repairs must be between 0 and 10.")
        try require((0...10).contains(maxReplans), "max replans must be between 0 and 10.")
        try require((0...10).contains(maxModelCallFailures), "max model call failures must be between 0 and 10.")
        try require(stepTimeoutSeconds > 0 && stepTimeoutSeconds <= 86_400, "The step timeout must be between 0 and 86400 seconds.")
        try require(maxTokens.map { (1...10_000_000).contains($0) } ?? true, "max tokens must be between 1 and 10000000.")
        try require(
            maxToolOutputCharacters.map { (100...100_000_000).contains($0) } ?? true,
            "max tool output characters must be between 100 and 100000000.")
        return self
    }

    // Decoding tolerates missing fields so that journals written by older versions still load.
    public init(from decoder: any Decoder) throws {
        let defaults = RunConfiguration()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decodeIfPresent(String.self, forKey: .model) ?? defaults.model
        baseURL = try c.decodeIfPresent(String.self, forKey: .baseURL)
        workspace = try c.decodeIfPresent(String.self, forKey: .workspace) ?? defaults.workspace
        tools = try c.decodeIfPresent([String].self, forKey: .tools) ?? defaults.tools
        maxSteps = try c.decodeIfPresent(Int.self, forKey: .maxSteps) ?? defaults.maxSteps
        maxConcurrentSteps = try c.decodeIfPresent(Int.self, forKey: .maxConcurrentSteps) ?? defaults.maxConcurrentSteps
        maxIterations = try c.decodeIfPresent(Int.self, forKey: .maxIterations) ?? defaults.maxIterations
        maxPlanRepairs = try c.decodeIfPresent(Int.self, forKey: .maxPlanRepairs) ?? defaults.maxPlanRepairs
        maxReplans = try c.decodeIfPresent(Int.self, forKey: .maxReplans) ?? defaults.maxReplans
        maxModelCallFailures = try c.decodeIfPresent(Int.self, forKey: .maxModelCallFailures) ?? defaults.maxModelCallFailures
        stepTimeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .stepTimeoutSeconds) ?? defaults.stepTimeoutSeconds
        stream = try c.decodeIfPresent(Bool.self, forKey: .stream) ?? defaults.stream
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature)
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        toolRules = try c.decodeIfPresent(JSONValue.self, forKey: .toolRules)
        metadata = try c.decodeIfPresent([String: String].self, forKey: .metadata)
        requestDigest = try c.decodeIfPresent(String.self, forKey: .requestDigest)
        tenant = try c.decodeIfPresent(String.self, forKey: .tenant)
        readOnly = try c.decodeIfPresent(Bool.self, forKey: .readOnly)
        maxToolOutputCharacters = try c.decodeIfPresent(Int.self, forKey: .maxToolOutputCharacters)
    }
}
