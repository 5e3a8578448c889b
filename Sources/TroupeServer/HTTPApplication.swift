public import Foundation
import HTTPTypes
public import Hummingbird
import Logging
import OpenAPIHummingbird
import OpenAPIRuntime
import TroupeAPI
import TroupeCore
import Yams

extension APIServer {
    /// The router: the generated API's routes over ``RunsAPI``, `/openapi.yaml` and
    /// `/openapi.json`, behind the guard that answers every refusal as JSON, the key
    /// authenticator, and the role each operation needs.
    public func router() throws -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        router.add(middleware: GuardMiddleware(server: self))
        router.add(middleware: KeyAuthenticator(server: self))
        router.add(middleware: CallerMiddleware())
        try RunsAPI(server: self).registerHandlers(
            on: router, serverURL: URL(string: "/")!, configuration: APIDates.configuration,
            middlewares: [ErrorMiddleware(logger: logger), RoleMiddleware(logger: logger), RateMiddleware(server: self)])
        let yaml = OpenAPIDocument.yaml
        let json = try Self.json(fromYAML: yaml)
        router.get("openapi.yaml") { _, _ in Self.document(yaml, type: "application/yaml") }
        router.get("openapi.json") { _, _ in Self.document(json, type: "application/json") }
        return router
    }

    /// The Hummingbird application on `host:port` (0 for any free port); `onRunning` gets the
    /// port it listens on.
    public func application(
        host: String, port: Int, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        Application(
            router: try router(),
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "troupe"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    private static func document(_ text: String, type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// The document as JSON, converted once at start-up.
    static func json(fromYAML yaml: String) throws -> String {
        let object = try Yams.load(yaml: yaml) ?? [:]
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}

/// In front of every route: a body over 1 MiB is a 413 before anything reads it, a draining
/// server answers 503 (but `/healthz` and `/readyz`), a path with the wrong method is a 405,
/// and every refusal — the router's too — is `{"error": {…}}`.
struct GuardMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let server: APIServer

    /// The routes and their methods, for telling 405 from 404.
    static let routes: [(pattern: [String], methods: [HTTPRequest.Method])] = [
        (["v1", "runs"], [.get, .post]),
        (["v1", "runs", "*"], [.get]),
        (["v1", "runs", "*", "events"], [.get]),
        (["v1", "runs", "*", "cancel"], [.post]),
        (["v1", "runs", "*", "resume"], [.post]),
        (["v1", "runs", "*", "approvals", "*"], [.post]),
        (["v1", "approvals"], [.get]),
        (["v1", "usage"], [.get]),
        (["v1", "keys"], [.get, .post]),
        (["v1", "keys", "*", "revoke"], [.post]),
        (["healthz"], [.get]),
        (["readyz"], [.get]),
        (["openapi.yaml"], [.get]),
        (["openapi.json"], [.get]),
    ]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            let path = request.uri.path
            if server.drain.isDraining, path != "/healthz", path != "/readyz" {
                throw APIFailure(status: 503, code: "unavailable", "The server is shutting down; send the request to another node.")
            }
            var request = request
            if let length = request.headers[.contentLength].flatMap(Int.init), length > APIServer.maxBodyBytes {
                throw APIFailure(status: 413, code: "payloadTooLarge", "The request body is larger than \(APIServer.maxBodyBytes) bytes.")
            }
            if request.method == .post || request.method == .put || request.method == .patch {
                let body = try await request.body.collect(upTo: APIServer.maxBodyBytes)
                // Its length known, an empty body counts as none (see ErrorMiddleware).
                var head = request.head
                head.headerFields[.contentLength] = "\(body.readableBytes)"
                request = Request(head: head, body: RequestBody(buffer: body))
            }
            let response = try await next(request, context)
            return response
        } catch let error as HTTPError where error.status == .notFound {
            if let allowed = Self.methods(for: request.uri.path), !allowed.contains(request.method) {
                return APIFailure(
                    status: 405, code: "methodNotAllowed",
                    "\(request.method.rawValue) is not allowed on \(request.uri.path); use \(allowed.map(\.rawValue).joined(separator: " or ")).",
                    headers: ["Allow": allowed.map(\.rawValue).joined(separator: ", ")]
                ).response
            }
            return APIFailure(error).response
        } catch {
            let failure = APIFailure(error)
            if failure.status >= 500 && failure.status != 503 {
                server.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            }
            return failure.response
        }
    }

    static func methods(for path: String) -> [HTTPRequest.Method]? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        return routes.first { route in
            route.pattern.count == parts.count && zip(route.pattern, parts).allSatisfy { $0 == "*" || $0 == $1 }
        }?.methods
    }
}
