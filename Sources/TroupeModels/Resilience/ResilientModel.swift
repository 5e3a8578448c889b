public import AsyncHTTPClient
public import Logging
public import TroupeCore

/// Where a model is served: an OpenAI-compatible API root and the model's name there.
public struct ModelEndpoint: Sendable, Hashable {
    public var baseURL: String
    /// Never journaled or logged.
    public var apiKey: String?
    public var model: String
    public var headers: [String: String]

    public init(baseURL: String, apiKey: String? = nil, model: String, headers: [String: String] = [:]) {
        self.baseURL = baseURL
        self.apiKey = apiKey
        self.model = model
        self.headers = headers
    }

    /// `model@baseURL`, as errors, logs and metrics name it.
    public var name: String { "\(model)@\(baseURL)" }
}

/// How model calls survive failing servers: the settings of every wrapper, and how they are put
/// together (``model(primary:httpClient:logger:)``).
public struct ModelResilience: Sendable, Hashable {
    /// Each HTTP call's limits.
    public var timeouts: ModelTimeouts
    /// Retries of a whole call (the fallback chain included), within its deadline.
    public var retry: RetryPolicy
    /// Requests and tokens per minute, per endpoint and model, shared by all runs of the process.
    public var rateLimits: RateLimits
    /// The breaker of each endpoint; `nil` turns breakers off.
    public var circuitBreaker: CircuitBreaker.Policy?
    /// Tried in order when the primary fails in a way that may pass (or its breaker is open).
    public var fallbacks: [ModelEndpoint]

    public init(
        timeouts: ModelTimeouts = ModelTimeouts(),
        retry: RetryPolicy = RetryPolicy(),
        rateLimits: RateLimits = RateLimits(),
        circuitBreaker: CircuitBreaker.Policy? = CircuitBreaker.Policy(),
        fallbacks: [ModelEndpoint] = []
    ) {
        self.timeouts = timeouts
        self.retry = retry
        self.rateLimits = rateLimits
        self.circuitBreaker = circuitBreaker
        self.fallbacks = fallbacks
    }

    /// The model client for `primary` and the fallbacks, with every wrapper in place:
    ///
    /// ```
    /// RetryingModel                      backoff, retry-after, the call's deadline
    ///   FallbackModel                    primary, then each fallback (only if there are any)
    ///     CircuitBreakerModel            per endpoint: fail fast while it is down
    ///       RateLimitedModel             per endpoint: the limits and the server's headers
    ///         OpenAIChatModel            timeouts, wire format
    /// ```
    ///
    /// Retries go around the whole chain, so one deadline bounds a call however many endpoints
    /// it tries; a fallback is tried at once when the endpoint before it fails. Build one client
    /// per process and share it between runs: breakers learn from every run's calls.
    public func model(primary: ModelEndpoint, httpClient: HTTPClient, logger: Logger) throws(TroupeError) -> any ChatModel {
        let chain = try ([primary] + fallbacks).map { endpoint throws(TroupeError) in
            FallbackModel.Entry(endpoint.name, try guarded(endpoint, httpClient: httpClient, logger: logger))
        }
        let model: any ChatModel = chain.count == 1 ? chain[0].model : try FallbackModel(chain)
        return try RetryingModel(model, policy: retry)
    }

    /// One endpoint's client behind its rate limiter and breaker.
    private func guarded(_ endpoint: ModelEndpoint, httpClient: HTTPClient, logger: Logger) throws(TroupeError) -> any ChatModel {
        let client = try OpenAIChatModel(
            configuration: OpenAIChatModel.Configuration(
                baseURL: endpoint.baseURL, apiKey: endpoint.apiKey, model: endpoint.model, headers: endpoint.headers, timeouts: timeouts),
            httpClient: httpClient)
        let limiter = RateLimiter.shared(for: endpoint.name, limits: rateLimits, maxServerWait: retry.maxRetryAfterSeconds)
        let limited = RateLimitedModel(client, limiter: limiter)
        guard let circuitBreaker else { return limited }
        return CircuitBreakerModel(limited, name: endpoint.name, policy: circuitBreaker, logger: logger)
    }
}
