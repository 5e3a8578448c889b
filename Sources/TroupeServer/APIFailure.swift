public import Foundation
import HTTPTypes
import Hummingbird
import Logging
import OpenAPIRuntime
public import TroupeCore

/// A refusal the API answers with a status of its own (403, 413, 405, 503…), in the same
/// `{"error": {"code", "message", "details"}}` shape as the ``TroupeError``s it also maps.
public struct APIFailure: Error, Sendable {
    public var status: Int
    public var code: String
    public var message: String
    public var details: [String: String]
    /// Headers of the answer besides its content type (`WWW-Authenticate`, `Retry-After`, `Allow`).
    public var headers: [String: String]

    public init(status: Int, code: String, _ message: String, details: [String: String] = [:], headers: [String: String] = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers
    }

    /// The fields of the answer: its content type and ``headers``.
    var headerFields: HTTPFields {
        var fields = HTTPFields()
        fields[.contentType] = "application/json; charset=utf-8"
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) {
            if let name = HTTPField.Name(name) { fields[name] = value }
        }
        return fields
    }

    /// The HTTP status for each of Troupe's error codes.
    static func status(for code: TroupeError.Code) -> Int {
        switch code {
        case .invalidInput, .invalidJSON, .schemaViolation, .configuration: 400
        case .accessDenied, .unknownTool: 403
        case .notFound: 404
        case .journalConflict, .leaseHeld, .invalidTransition, .cancelled: 409
        case .storageUnavailable: 503
        default: 500
        }
    }

    /// `error` as the API answers it: a refusal keeps its status, a ``TroupeError`` gets its
    /// code's, and what the server did not expect is a 500 that says no more than that.
    init(_ error: any Error) {
        switch error {
        case let failure as APIFailure:
            self = failure
        case let error as TroupeError:
            let status = Self.status(for: error.code)
            self.init(
                status: status, code: error.code.rawValue,
                status == 500 ? "The server failed to handle the request; it was logged." : Redactor.shared.redact(error.message),
                details: status == 500 ? [:] : Redactor.shared.redact(error).details)
        case let error as HTTPError:
            switch error.status {
            case .notFound: self.init(status: 404, code: TroupeError.Code.notFound.rawValue, "There is no such route.")
            case .contentTooLarge:
                self.init(status: 413, code: "payloadTooLarge", "The request body is larger than \(APIServer.maxBodyBytes) bytes.")
            default: self.init(status: Int(error.status.code), code: "invalidInput", error.body ?? error.status.reasonPhrase)
            }
        default:
            self.init(status: 500, code: TroupeError.Code.internal.rawValue, "The server failed to handle the request; it was logged.")
        }
    }

    /// The JSON body: `{"error": {"code", "message", "details"}}`.
    var body: Data {
        let document: [String: Any] = ["error": ["code": code, "message": message, "details": details]]
        return (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }

    var response: Response {
        Response(status: HTTPResponse.Status(code: status), headers: headerFields, body: ResponseBody(byteBuffer: ByteBuffer(data: body)))
    }
}

/// Turns what a handler or the generated decoding threw into the API's error answers: a body the
/// generated code could not decode (malformed JSON, a wrong type, an unknown field, a missing or
/// bad parameter) is a 400 naming the field.
struct ErrorMiddleware: ServerMiddleware {
    let logger: Logger

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        do {
            // A POST without a body (cancel, resume) has no JSON to decode.
            guard let body, body.length != .known(0) else { return try await next(request, nil, metadata) }
            // The document has no nullable field: `null` is refused, not read as absent.
            let bytes = try await Data(collecting: body, upTo: APIServer.maxBodyBytes)
            if case .object(let members) = try? JSONValue.parse(String(decoding: bytes, as: UTF8.self)),
                let field = members.keys.sorted().first(where: { members[$0] == .null })
            {
                let failure = APIFailure(
                    status: 400, code: TroupeError.Code.invalidInput.rawValue, "The field '\(field)' may not be null: leave it out.",
                    details: ["field": field])
                return (HTTPResponse(status: .init(code: failure.status), headerFields: failure.headerFields), HTTPBody(failure.body))
            }
            return try await next(request, bytes.isEmpty ? nil : HTTPBody(bytes), metadata)
        } catch let error as ServerError {
            let failure: APIFailure
            if error.underlyingError is APIFailure || error.underlyingError is TroupeError {
                failure = APIFailure(error.underlyingError)
            } else if error.operationInput == nil {
                failure = APIFailure(status: 400, code: TroupeError.Code.invalidInput.rawValue, Self.describe(decoding: error))
            } else {
                failure = APIFailure(error.underlyingError)
            }
            if failure.status >= 500 {
                logger.error("request failed", metadata: ["operation": "\(operationID)", "error": "\(error.underlyingError)"])
            }
            return (HTTPResponse(status: .init(code: failure.status), headerFields: failure.headerFields), HTTPBody(failure.body))
        }
    }

    /// What was wrong with a request the generated code could not decode, naming the field.
    static func describe(decoding error: ServerError) -> String {
        var underlying: any Error = error.underlyingError
        // The runtime wraps decoding errors; the innermost one names the field.
        while true {
            let mirror = Mirror(reflecting: underlying)
            guard let inner = mirror.children.first(where: { $0.value is any Error })?.value as? any Error, !(underlying is DecodingError)
            else { break }
            underlying = inner
        }
        switch underlying as? DecodingError {
        case .keyNotFound(let key, let context)?:
            return "The field '\(path(context.codingPath + [key]))' is required."
        case .typeMismatch(let type, let context)?:
            return "The field '\(path(context.codingPath))' must be \(kind(type))."
        case .valueNotFound(let type, let context)?:
            return "The field '\(path(context.codingPath))' must be \(kind(type)), not null."
        case .dataCorrupted(let context)?:
            let field = path(context.codingPath)
            let reason = context.debugDescription
            if reason.contains("Additional properties are disabled") {
                return "Unknown field '\(field)' in the request body: only the documented fields are accepted (docs/API.md)."
            }
            return field.isEmpty ? "The request body is not valid JSON: \(reason)" : "The field '\(field)' is invalid: \(reason)"
        default:
            // The runtime's own account of what it could not read (a parameter, a content type).
            return "The request is invalid: \(String(describing: underlying).prefix(300))."
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }

    private static func kind(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type: "an integer"
        case is Double.Type: "a number"
        case is Bool.Type: "true or false"
        default: "of type \(type)"
        }
    }
}
