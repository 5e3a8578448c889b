import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import TroupeCore

/// What went wrong on the way to a model server, in words an operator can act on, and whether it
/// was a timeout or another transport failure.
package enum TransportFailure {
    package static func describe(_ error: any Error) -> (code: TroupeError.Code, cause: String) {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout, .getConnectionFromPoolTimeout:
                return (.timeout, "connecting took longer than the connect timeout")
            case .tlsHandshakeTimeout: return (.timeout, "the TLS handshake took longer than the connect timeout")
            case .deadlineExceeded, .readTimeout, .writeTimeout: return (.timeout, "the request timed out")
            case .remoteConnectionClosed: return (.transport, "the server closed the connection before the answer was complete")
            case .cancelled: return (.cancelled, "the request was cancelled")
            // The short description names the failure without its values: a long one quotes
            // header values, the Authorization header among them.
            default: return (.transport, error.shortDescription)
            }
        }
        if let error = error as? IOError { return (.transport, describe(errno: error.errnoCode)) }
        if let error = error as? NIOConnectionError {
            if error.dnsAError != nil || error.dnsAAAAError != nil, error.connectionErrors.isEmpty {
                return (.transport, "the host name could not be resolved")
            }
            if let first = error.connectionErrors.first?.error { return describe(first) }
        }
        if let error = error as? ChannelError, case .connectTimeout = error {
            return (.timeout, "connecting took longer than the connect timeout")
        }
        let text = String(describing: error)
        return (text.lowercased().contains("timeout") ? .timeout : .transport, text)
    }

    private static func describe(errno code: Int32) -> String {
        switch code {
        case ECONNREFUSED: "connection refused (nothing is listening there)"
        case ECONNRESET: "the server reset the connection"
        case EHOSTUNREACH, ENETUNREACH: "the host is unreachable"
        case ETIMEDOUT: "the connection timed out"
        case EPIPE: "the server closed the connection while the request was being sent"
        default: String(cString: strerror(code)).lowercased()
        }
    }
}
