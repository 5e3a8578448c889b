public import Foundation
import HTTPTypes
public import Hummingbird
import HummingbirdAuth
import Logging
import OpenAPIRuntime
import Synchronization
public import TroupeCore
public import TroupeStore

/// Who is calling the API: the tenant and role of the key it presented.
public struct Caller: Sendable, Hashable {
    public var tenant: String
    public var role: Role
    /// The key's ID (`nil` on a server without keys).
    public var keyID: String?

    public init(tenant: String, role: Role, keyID: String?) {
        self.tenant = tenant
        self.role = role
        self.keyID = keyID
    }

    /// The runs this caller reaches: an admin's every tenant's, others their own tenant's.
    public var scope: TenantScope { role == .admin ? .all : .tenant(tenant) }

    /// The caller of the request being handled, set by ``CallerMiddleware``.
    @TaskLocal static var current: Caller?
}

/// How the API knows its callers.
public enum APIAccess: Sendable {
    /// Every route but `/healthz`, `/readyz` and `/openapi.*` needs a key of this store.
    case keys(any KeyStore)
    /// No keys (`troupe serve --insecure-no-auth`, loopback only): every caller is an admin of
    /// the default tenant.
    case open
}

/// The request context of the API's router: Hummingbird's, with the caller a key identified.
public struct APIRequestContext: AuthRequestContext, RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var identity: Caller?

    public init(source: Source) {
        coreContext = .init(source: source)
        identity = nil
    }
}

/// The routes anyone may call, without a key.
enum PublicRoutes {
    static let paths: Set<String> = ["/healthz", "/readyz", "/openapi.yaml", "/openapi.json"]
}

/// Reads the bearer key of a request (hummingbird-auth's authenticator middleware): a key of the
/// store, not revoked and not expired, identifies its caller. A key that is malformed, unknown,
/// expired or revoked is a 401 at once, with the same words for each (no oracle); a request
/// without a key goes on unidentified, and ``CallerMiddleware`` refuses it unless its route is
/// public.
struct KeyAuthenticator: AuthenticatorMiddleware {
    typealias Context = APIRequestContext
    let server: APIServer

    func authenticate(request: Request, context: Context) async throws -> Caller? {
        switch server.access {
        case .open:
            // Without keys, only pages of this machine may call: a web page whose host name a
            // rebinding DNS points at 127.0.0.1 still names its own host.
            guard let host = request.head.authority.map(Self.hostName), Loopback.isLoopback(host) else {
                throw APIFailure(
                    status: 403, code: TroupeError.Code.accessDenied.rawValue,
                    "This server runs without keys (--insecure-no-auth) and answers only requests addressed to a loopback host.")
            }
            return Caller(tenant: RunConfiguration.defaultTenant, role: .admin, keyID: nil)
        case .keys(let store):
            guard !PublicRoutes.paths.contains(request.uri.path), let header = request.headers[.authorization] else { return nil }
            guard let token = Self.bearerToken(header), let id = APIKeys.id(of: token) else {
                throw APIFailure.unauthorized(keySent: true)
            }
            let now = server.now()
            guard let record = try await store.key(id: id) else {
                // The same work as for a known key: the time taken does not tell which IDs exist.
                _ = APIKeys.matches(token, Self.decoy)
                throw APIFailure.unauthorized(keySent: true)
            }
            guard APIKeys.matches(token, record), record.isActive(at: now) else {
                throw APIFailure.unauthorized(keySent: true)
            }
            server.keyUses.note(id, at: now)
            return Caller(tenant: record.tenant, role: record.role, keyID: record.id)
        }
    }

    /// The token of an `Authorization: Bearer TOKEN` header: the scheme in any case (RFC 7235),
    /// spaces or tabs around the token.
    static func bearerToken(_ header: String) -> String? {
        let parts = header.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1])
    }

    /// The host of an authority (`host:port`, `[::1]:port`).
    static func hostName(_ authority: String) -> String {
        if authority.hasPrefix("["), let end = authority.firstIndex(of: "]") {
            return String(authority[authority.index(after: authority.startIndex)..<end])
        }
        return String(authority.split(separator: ":", maxSplits: 1).first ?? "")
    }

    private static let decoy = APIKeyRecord(
        id: "key_", prefix: "", name: nil, tenant: "", role: .viewer, createdAt: Date(timeIntervalSince1970: 0), expiresAt: nil,
        digest: String(repeating: "0", count: 64))
}

/// Loopback addresses, for the servers that run without keys.
public enum Loopback {
    /// `localhost`, `::1`, or an IPv4 literal in 127.0.0.0/8 (never a name that merely starts with `127.`).
    public static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets.first == "127"
            && octets.allSatisfy { octet in !octet.isEmpty && octet.count <= 3 && octet.allSatisfy(\.isASCII) && UInt8(octet) != nil }
    }
}

/// Refuses unidentified requests to every route but the public ones (401), and makes the
/// caller known to the handlers of the request (``Caller/current``).
struct CallerMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let caller = context.identity else {
            if PublicRoutes.paths.contains(request.uri.path) { return try await next(request, context) }
            throw APIFailure.unauthorized(keySent: false)
        }
        return try await Caller.$current.withValue(caller) { try await next(request, context) }
    }
}

/// The role each operation of the API needs (`nil`: public), checked before its handler runs.
/// An operation not listed here is refused to everyone: a route added to the document without a
/// decision here is closed, not open (and the authorization matrix test, which reads the routes
/// from the served document, fails for it).
struct RoleMiddleware: ServerMiddleware {
    static let required: [String: Role?] = [
        "createRun": .operator,
        "listRuns": .viewer,
        "getRun": .viewer,
        "streamRunEvents": .viewer,
        "cancelRun": .operator,
        "resumeRun": .operator,
        "listApprovals": .viewer,
        "decideApproval": .operator,
        "getUsage": .viewer,
        "listKeys": .admin,
        "createKey": .admin,
        "revokeKey": .admin,
        "health": .none,
        "readiness": .none,
    ]

    let logger: Logger

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        guard let entry = Self.required[operationID] else {
            logger.error("an operation without a role was refused", metadata: ["operation": "\(operationID)"])
            throw APIFailure(status: 403, code: TroupeError.Code.accessDenied.rawValue, "This operation is not open to any key.")
        }
        guard let role = entry else { return try await next(request, body, metadata) }
        guard let caller = Caller.current else { throw APIFailure.unauthorized(keySent: false) }
        guard caller.role.includes(role) else {
            throw APIFailure(
                status: 403, code: TroupeError.Code.accessDenied.rawValue,
                "This key's role (\(caller.role.rawValue)) may not do this; it needs the \(role.rawValue) role.",
                details: ["role": caller.role.rawValue, "required": role.rawValue])
        }
        return try await next(request, body, metadata)
    }
}

/// After the role check: each caller's requests against its key's and its tenant's token
/// buckets (``APIServer/rates``). Public routes are not limited.
struct RateMiddleware: ServerMiddleware {
    let server: APIServer

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        guard RoleMiddleware.required[operationID] != .some(.none), let caller = Caller.current else {
            return try await next(request, body, metadata)
        }
        let rates = server.rates
        let now = server.now()
        var rules = [TokenBuckets.Rule(name: "tenant:\(caller.tenant)", rate: rates.perTenant, burst: rates.perTenantBurst)]
        // A server without keys has no key to count by: its tenant's bucket alone.
        if let keyID = caller.keyID {
            rules.insert(TokenBuckets.Rule(name: "key:\(keyID)", rate: rates.perKey, burst: rates.perKeyBurst), at: 0)
        }
        if let (rule, wait) = server.buckets.take(rules, at: now) {
            let whose = rule.name.hasPrefix("key:") ? "this key" : "this tenant"
            throw APIFailure.tooManyRequests(
                "Too many requests from \(whose) (at most \(String(format: "%g", rule.rate)) a second, \(rule.burst) at once); retry later.",
                retryAfter: wait)
        }
        return try await next(request, body, metadata)
    }
}

extension APIFailure {
    /// A 429 with `Retry-After` in whole seconds (at least 1).
    static func tooManyRequests(_ message: String, retryAfter seconds: Double) -> APIFailure {
        let whole = max(1, Int(min(seconds, 86_400).rounded(.up)))
        return APIFailure(
            status: 429, code: TroupeError.Code.rateLimited.rawValue, message, details: ["retryAfter": "\(whole)"],
            headers: ["Retry-After": "\(whole)"])
    }

    /// A 401 with its `WWW-Authenticate` challenge (RFC 6750): `invalid_token` when a key was sent.
    static func unauthorized(keySent: Bool) -> APIFailure {
        APIFailure(
            status: 401, code: "unauthorized",
            keySent
                ? "The API key is not valid: it is malformed, unknown, expired or revoked."
                : "This route needs an API key: send `Authorization: Bearer trp_…` (make one with `troupe keys create`).",
            headers: ["WWW-Authenticate": keySent ? #"Bearer realm="troupe", error="invalid_token""# : #"Bearer realm="troupe""#])
    }
}

/// When keys were last used, gathered in memory and written in one batch now and then (not one
/// write per request).
public final class KeyUseLog: Sendable {
    private let uses = Mutex<[String: Date]>([:])

    public init() {}

    /// Notes that key `id` was used at `time`.
    public func note(_ id: String, at time: Date) {
        uses.withLock { $0[id] = max(time, $0[id] ?? time) }
    }

    /// Writes what was noted since the last flush to `store`; what cannot be written is kept for
    /// the next flush.
    public func flush(to store: any KeyStore) async throws {
        let batch = uses.withLock { uses in
            defer { uses = [:] }
            return uses
        }
        guard !batch.isEmpty else { return }
        do {
            try await store.recordKeyUse(batch)
        } catch {
            uses.withLock { uses in uses.merge(batch) { max($0, $1) } }
            throw error
        }
    }
}
