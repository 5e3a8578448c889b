import AsyncHTTPClient
import Foundation
import Logging
internal import MCP
import NIOCore
import NIOHTTP1
import TroupeCore
import TroupeModels

/// What every Troupe MCP transport adds to the SDK's: why the connection is gone, once it is.
protocol SupervisedTransport: MCP.Transport {
    /// Why the connection is gone for good (the process exited, the session ended); `nil` while
    /// it is up.
    var endReason: String? { get }
    /// Returns once the connection is gone for good, with why.
    func ended() async -> String
}

/// MCP's streamable HTTP transport on AsyncHTTPClient (the SDK's own uses URLSession, whose
/// streaming does not work on Linux).
///
/// Each message is a `POST` to the server's URL. The answer to a request comes back as JSON or
/// as a `text/event-stream` whose events carry the answer and any notifications before it; a
/// notification is answered `202 Accepted`. The `Mcp-Session-Id` the server gives at
/// `initialize` goes with every later request, with `MCP-Protocol-Version`; `disconnect` ends the
/// session with a `DELETE`. (The optional `GET` stream for messages the server starts on its
/// own is not opened: Troupe answers no server requests, such as sampling.)
actor StreamableHTTPTransport: MCP.Transport, SupervisedTransport {
    nonisolated let logger: Logger
    private let serverName: String
    private let url: String
    private let headers: [String: String]
    private let httpClient: HTTPClient
    /// The longest one exchange may take (the call's own timeout cancels it sooner).
    private let requestTimeout: Duration

    private let messages: AsyncThrowingStream<Data, any Error>
    private let continuation: AsyncThrowingStream<Data, any Error>.Continuation
    private var sessionID: String?
    private var protocolVersion: String?
    private(set) var endReason: String?
    private var endWaiters: [CheckedContinuation<String, Never>] = []

    /// The largest answer accepted.
    static let maxResponseBytes = 32 << 20

    init(serverName: String, url: String, headers: [String: String], httpClient: HTTPClient, requestTimeout: Duration, logger: Logger) {
        self.serverName = serverName
        self.url = url
        self.headers = headers
        self.httpClient = httpClient
        self.requestTimeout = requestTimeout
        self.logger = ClippedLog.logger(logger)
        (messages, continuation) = AsyncThrowingStream.makeStream()
    }

    func connect() async throws {}

    nonisolated func receive() -> AsyncThrowingStream<Data, any Error> { messages }

    func send(_ data: Data) async throws {
        if let endReason { throw TroupeError(.toolFailed, "MCP server '\(serverName)' is not connected: \(endReason)") }
        let message = try? JSONValue.parse(data)
        // A request (it has an ID and a method) must be answered in this exchange.
        let requestID = message?["method"] != nil ? message?["id"] : nil
        let isInitialize = message?["method"]?.stringValue == "initialize"

        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers = requestHeaders()
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        request.headers.replaceOrAdd(name: "Accept", value: "application/json, text/event-stream")
        request.body = .bytes(ByteBuffer(bytes: data))
        // One limit for the whole exchange: the client's own deadline covers only the head, and a
        // server may keep an event stream open for as long as it likes.
        let started = ContinuousClock.now
        let deadline = NIODeadline.now() + .init(requestTimeout)
        let response: HTTPClientResponse
        do {
            response = try await httpClient.execute(request, deadline: deadline)
        } catch {
            throw TroupeError(
                .toolFailed, "Could not reach MCP server '\(serverName)' at \(url): \(TransportFailure.describe(error).cause).")
        }
        if isInitialize, let session = response.headers.first(name: "Mcp-Session-Id"), !session.isEmpty {
            sessionID = session
        }
        try await check(response)
        guard response.status != .accepted, response.status != .noContent else { return }

        let contentType = response.headers.first(name: "Content-Type")?.lowercased() ?? ""
        let limit = requestTimeout - (ContinuousClock.now - started)
        let answered: Bool
        do {
            answered =
                try await withTimeLimit(limit) {
                    try await self.readAnswer(
                        of: response, eventStream: contentType.hasPrefix("text/event-stream"),
                        answering: requestID, initialize: isInitialize)
                }
                ?? {
                    throw TroupeError(
                        .toolFailed,
                        "MCP server '\(serverName)' did not finish its answer within \(String(format: "%g", requestTimeout.seconds)) s; "
                            + "it was dropped.")
                }()
        } catch let error as TroupeError {
            throw error
        } catch {
            throw TroupeError(
                .toolFailed, "MCP server '\(serverName)' broke off its answer: \(TransportFailure.describe(error).cause).")
        }
        if requestID != nil, !answered {
            throw TroupeError(.toolFailed, "MCP server '\(serverName)' ended its answer (HTTP \(response.status.code)) without a result.")
        }
    }

    /// Reads an answer's body and passes its messages on; whether the answer to `requestID` was
    /// among them. An event stream is left (and its connection closed) as soon as the answer
    /// arrived: a server may keep it open for messages Troupe does not take.
    private func readAnswer(
        of response: HTTPClientResponse, eventStream: Bool, answering requestID: JSONValue?, initialize: Bool
    ) async throws -> Bool {
        guard eventStream else {
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: Self.maxResponseBytes)
            } catch is NIOTooManyBytesError {
                throw oversized()
            }
            return deliver(String(buffer: body), answering: requestID, initialize: initialize)
        }
        // A notification expects no answer: a stream the server opens for it is not waited on.
        guard requestID != nil else { return false }
        var parser = SSEParser()
        var received = 0
        for try await chunk in response.body {
            received += chunk.readableBytes
            guard received <= Self.maxResponseBytes else { throw oversized() }
            var answered = false
            for event in parser.feed(chunk.readableBytesView) {
                answered = deliver(event.data, answering: requestID, initialize: initialize) || answered
            }
            if answered { return true }
        }
        return parser.finish().reduce(false) { answered, event in
            deliver(event.data, answering: requestID, initialize: initialize) || answered
        }
    }

    /// Ends the session (`DELETE`, best effort) and the message stream.
    func disconnect() async {
        guard endReason == nil else { return }
        if let sessionID {
            var request = HTTPClientRequest(url: url)
            request.method = .DELETE
            request.headers = requestHeaders()
            request.headers.replaceOrAdd(name: "Mcp-Session-Id", value: sessionID)
            _ = try? await httpClient.execute(request, timeout: .seconds(2))
        }
        end("it was disconnected")
    }

    func ended() async -> String {
        if let endReason { return endReason }
        return await withCheckedContinuation { endWaiters.append($0) }
    }

    // MARK: - Helpers

    private func requestHeaders() -> HTTPHeaders {
        var result = HTTPHeaders(headers.map { ($0.key, $0.value) })
        if let sessionID { result.replaceOrAdd(name: "Mcp-Session-Id", value: sessionID) }
        if let protocolVersion { result.replaceOrAdd(name: "MCP-Protocol-Version", value: protocolVersion) }
        return result
    }

    /// Throws for an answer that is not a success, in words that say what to do.
    private func check(_ response: HTTPClientResponse) async throws {
        guard !(200..<300).contains(response.status.code) else { return }
        let excerpt = (try? await response.body.collect(upTo: 4096)).map { String(buffer: $0) } ?? ""
        let detail = excerpt.trimmingCharacters(in: .whitespacesAndNewlines).clipped(to: 300)
        let said = detail.isEmpty ? "" : ": \(detail)"
        switch response.status.code {
        case 404 where sessionID != nil:
            end("the server ended the session (HTTP 404)")
            throw TroupeError(.toolFailed, "MCP server '\(serverName)' ended the session; it will be reconnected for the next call.")
        case 401, 403:
            throw TroupeError(
                .toolFailed,
                "MCP server '\(serverName)' refused the request (HTTP \(response.status.code))\(said). Check the headers in its configuration."
            )
        default:
            throw TroupeError(.toolFailed, "MCP server '\(serverName)' answered HTTP \(response.status.code)\(said).")
        }
    }

    /// Passes a message on to the client; whether it is the answer to `requestID`.
    private func deliver(_ text: String, answering requestID: JSONValue?, initialize: Bool) -> Bool {
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return false }
        let data = Data(text.utf8)
        guard let requestID else {
            continuation.yield(data)
            return false
        }
        let message = try? JSONValue.parse(text)
        let isAnswer = message?["id"] == requestID && (message?["result"] != nil || message?["error"] != nil)
        if isAnswer, initialize, let version = message?["result"]?["protocolVersion"]?.stringValue {
            protocolVersion = version
        }
        continuation.yield(data)
        return isAnswer
    }

    private func oversized() -> TroupeError {
        TroupeError(.toolFailed, "MCP server '\(serverName)' sent an answer over \(Self.maxResponseBytes >> 20) MiB; it was dropped.")
    }

    private func end(_ reason: String) {
        guard endReason == nil else { return }
        endReason = reason
        continuation.finish()
        for waiter in endWaiters { waiter.resume(returning: reason) }
        endWaiters = []
    }
}
