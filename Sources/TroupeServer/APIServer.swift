public import Foundation
public import Logging
public import TroupeCore
public import TroupeStore

/// What `troupe serve` lets callers do, decided by the operator: callers name a model among
/// ``models`` and tools among ``allowedTools``; they never choose an endpoint, a key or a
/// path. Each run gets a workspace of its own under ``workspaceRoot``.
public struct APIServer: Sendable {
    /// The largest request body accepted (1 MiB); larger ones get a 413.
    public static let maxBodyBytes = 1 << 20
    /// Metadata limits: entries per run, bytes per key, bytes per value.
    public static let metadataLimits = (entries: 32, keyBytes: 64, valueBytes: 512)

    /// Every tenant's runs; each request reaches them through a ``ScopedRunStore`` of its caller's scope.
    public var store: any RunStore
    /// How callers are known: by the keys of a store, or not at all (`--insecure-no-auth`).
    public var access: APIAccess
    /// When keys were last used, written to the key store in batches (``KeyUseLog/flush(to:)``).
    public let keyUses = KeyUseLog()
    /// The configuration of every new run before the request's fields: the model, endpoint,
    /// limits and tool groups of the server's settings.
    public var runDefaults: RunConfiguration
    /// The models a request may name (the default model is always one of them).
    public var models: [String]
    /// The tool groups and single tools a request may ask for (`fs`, `shell`, `web`, `mcp`,
    /// `mcp:NAME`, `fs_read`, `mcp:NAME/TOOL`, …; see `ToolSelection`): an entry is allowed when it
    /// is listed or a group that holds it is.
    public var allowedTools: [String]
    /// The folder under which each run gets its own workspace (`<root>/<run id>`).
    public var workspaceRoot: String
    /// Completes a new run's configuration once its tools are known: the tool rules to journal.
    public var finishConfiguration: @Sendable (inout RunConfiguration) throws -> Void
    /// Begins on SIGTERM: `/readyz` answers 503, new requests get 503, event streams close.
    public var drain: DrainSignal
    /// Who the API is, in the leases it takes for a moment when queuing a run for workers.
    public var owner: String
    /// A comment line on idle event streams, so that proxies keep them open.
    public var keepAliveInterval: Duration = .seconds(15)
    /// How often an open event stream checks that its key still works (it ends once the key is
    /// revoked or expired).
    public var keyCheckInterval: Duration = .seconds(5)
    /// How often an event stream reads the journal for events written by other processes.
    public var pollInterval: Duration = .milliseconds(250)
    public var now: @Sendable () -> Date = { Date() }
    public var logger: Logger
    /// Requests a second per key and per tenant (429 with `Retry-After` above them).
    public var rates = RequestRates()
    /// Event streams one key may hold open at once (429 above).
    public var maxStreamsPerKey = 16
    /// Limits of the runs each tenant creates, by tenant.
    public var tenantLimits: [String: TenantRunLimits] = [:]
    /// The prices `GET /v1/usage` costs calls with.
    public var prices = PriceTable.builtIn
    let buckets = TokenBuckets()
    let streams = StreamCounter()

    /// Event streams open now with the key `keyID` (`nil`: on a server without keys).
    public func openStreams(keyID: String?) -> Int {
        streams.count(of: "key:\(keyID ?? "open")")
    }

    public init(
        store: any RunStore,
        access: APIAccess,
        runDefaults: RunConfiguration,
        models: [String],
        allowedTools: [String],
        workspaceRoot: String,
        drain: DrainSignal = DrainSignal(),
        owner: String,
        logger: Logger = Logger(label: "troupe.server"),
        finishConfiguration: @escaping @Sendable (inout RunConfiguration) throws -> Void = { _ in }
    ) {
        self.store = store
        self.access = access
        self.runDefaults = runDefaults
        self.models = Array(Set(models + [runDefaults.model])).sorted()
        self.allowedTools = allowedTools
        self.workspaceRoot = workspaceRoot
        self.drain = drain
        self.owner = owner
        self.logger = logger
        self.finishConfiguration = finishConfiguration
    }
}
