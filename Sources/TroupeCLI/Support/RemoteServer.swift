import ArgumentParser
import Foundation
import HTTPTypes
import OpenAPIAsyncHTTPClient
import OpenAPIRuntime
import Troupe
import TroupeAPI
import TroupeServer

/// A `troupe serve` the commands talk to instead of a store (`--server URL`, `TROUPE_SERVER`),
/// through the client generated from openapi.yaml. Its refusals become the ``TroupeError``s a
/// local store would have raised, so the commands print the same lines and exit with the same
/// codes.
struct RemoteServer {
    let url: String
    let client: Client

    /// - Parameter apiKey: the key sent with every request (`Authorization: Bearer …`).
    init(_ url: String, apiKey: String? = nil) throws {
        guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
            throw TroupeError(.configuration, "The server URL '\(url.prefix(200))' is not an http(s) URL (e.g. http://127.0.0.1:8080).")
        }
        self.url = url
        client = Client(
            // The client keeps trying to connect until the deadline: a server that is down is said
            // after 10 s rather than a minute. Event streams are not bounded by it once they answered.
            serverURL: parsed, configuration: APIDates.configuration,
            transport: AsyncHTTPClientTransport(configuration: .init(timeout: .seconds(10))),
            middlewares: [RefusalsAsErrors(), BearerKey(key: apiKey)])
    }

    /// `--server`, else `$TROUPE_SERVER`; `nil` to use a store. The API key comes from
    /// `$TROUPE_API_KEY` (never a flag: command lines are visible to every user of the machine).
    static func chosen(_ flag: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> RemoteServer? {
        guard let url = flag ?? environment["TROUPE_SERVER"], !url.isEmpty else { return nil }
        let key = environment["TROUPE_API_KEY"].flatMap { $0.isEmpty ? nil : $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        if let key { Redactor.shared.register(key) }
        return try RemoteServer(url, apiKey: key)
    }

    /// Sends the API key with every request.
    private struct BearerKey: ClientMiddleware {
        let key: String?

        func intercept(
            _ request: HTTPRequest, body: HTTPBody?, baseURL: URL, operationID: String,
            next: @Sendable (HTTPRequest, HTTPBody?, URL) async throws -> (HTTPResponse, HTTPBody?)
        ) async throws -> (HTTPResponse, HTTPBody?) {
            var request = request
            if let key { request.headerFields[.authorization] = "Bearer \(key)" }
            return try await next(request, body, baseURL)
        }
    }

    /// Runs one call, with what went wrong on the way said as a ``TroupeError``.
    func call<T>(_ body: (Client) async throws -> T) async throws -> T {
        do {
            return try await body(client)
        } catch let error as ClientError {
            if let refusal = error.underlyingError as? TroupeError { throw refusal }
            throw TroupeError(
                .storageUnavailable, "Cannot reach the server at \(url): \(error.underlyingError.localizedDescription)",
                underlying: error.underlyingError)
        }
    }

    /// A run document of the API as the CLI's own type: both are the same JSON.
    static func report(_ run: Components.Schemas.Run) throws -> RunReport {
        try converted(run)
    }

    /// A generated type's value as one of Troupe's own, through the JSON both describe.
    static func converted<Value: Encodable, Result: Decodable>(_ value: Value, to type: Result.Type = Result.self) throws -> Result {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(try APIDates().encode(date))
        }
        return try JSONCoding.decoder().decode(Result.self, from: encoder.encode(value))
    }

    /// Error responses, `{"error": {"code", "message", "details"}}`, thrown as ``TroupeError``s.
    private struct RefusalsAsErrors: ClientMiddleware {
        func intercept(
            _ request: HTTPRequest, body: HTTPBody?, baseURL: URL, operationID: String,
            next: @Sendable (HTTPRequest, HTTPBody?, URL) async throws -> (HTTPResponse, HTTPBody?)
        ) async throws -> (HTTPResponse, HTTPBody?) {
            let (response, responseBody) = try await next(request, body, baseURL)
            guard response.status.code >= 400 else { return (response, responseBody) }
            var bytes = Data()
            if let responseBody { bytes = try await Data(collecting: responseBody, upTo: 1 << 20) }
            guard let refusal = try? JSONDecoder().decode(Components.Schemas.ErrorResponse.self, from: bytes) else {
                throw TroupeError(
                    response.status.code >= 500 ? .storageUnavailable : .invalidInput,
                    "The server answered \(response.status.code) \(response.status.reasonPhrase).")
            }
            let code: TroupeError.Code =
                switch refusal.error.code {
                case "unavailable": .storageUnavailable
                case "payloadTooLarge", "methodNotAllowed": .invalidInput
                case "unauthorized": .accessDenied
                default: TroupeError.Code(rawValue: refusal.error.code)
                }
            var message = refusal.error.message
            if refusal.error.code == "unauthorized" { message += " Set TROUPE_API_KEY to a key of this server." }
            throw TroupeError(code, message, details: refusal.error.details?.additionalProperties ?? [:])
        }
    }
}

/// `--server`, for the commands that can work through a `troupe serve` instead of a store.
struct ServerOption: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "A `troupe serve` to work through instead of a store (default: $TROUPE_SERVER), e.g. http://127.0.0.1:8080.",
            valueName: "url"))
    var server: String?

    /// The server to use, if one is named.
    func remote() throws -> RemoteServer? {
        try RemoteServer.chosen(server)
    }
}

extension RemoteServer {
    /// Follows a run over its event stream until it ends, needs attention or waits for approval, handing each event to
    /// `observer` as a driver's observer would get it; reconnects after a dropped stream (or a
    /// draining server) from the last event seen.
    func follow(_ id: RunID, observer: @Sendable (RunEvent, RunStateMachine) -> Void) async throws -> RunReport {
        var machine = RunStateMachine(runID: id)
        var failures = 0
        while true {
            do {
                let output = try await call {
                    try await $0.streamRunEvents(path: .init(id: id.rawValue), query: .init(after: machine.sequence))
                }
                var parser = SSEParser()
                // The stream stays open while a run waits for a person: stop following once it stands still.
                for try await chunk in try output.ok.body.textEventStream {
                    for event in parser.feed(chunk) where !event.data.isEmpty {
                        let record = try JSONCoding.decode(RunEventRecord.self, from: Data(event.data.utf8))
                        guard record.sequence == machine.sequence + 1 else { continue }
                        try machine.apply(record.event, at: record.recordedAt)
                        observer(record.event, machine)
                    }
                    if machine.isIdleWaitingForApproval { break }
                }
                failures = 0
            } catch let error as TroupeError where error.code == .storageUnavailable && failures < 10 {
                failures += 1
            }
            if machine.status.isTerminal || machine.status == .needsAttention || machine.isIdleWaitingForApproval {
                return try Self.report(try await call { try await $0.getRun(path: .init(id: id.rawValue)).ok.body.json })
            }
            try await Task.sleep(for: .milliseconds(200 * (failures + 1)))
        }
    }

    /// What `finish` prints for a local run, for a run on this server; exits with the run's code.
    func finish(_ report: RunReport, json: Bool) throws {
        let status = RunStatus(rawValue: report.status) ?? .failed
        if json {
            print(try report.json())
        } else {
            sayEnding(status, answer: report.answer, error: report.error?.message)
            if status == .waitingForApproval {
                sayWaiting(report.approvals?.filter { $0.status == "pending" } ?? [], run: RunID(report.id), flag: " --server \(url)")
            }
            say("Server: \(url) · inspect with `troupe show \(report.id) --server \(url)`")
        }
        try exit(with: status)
    }
}
