import Logging
import TroupeCore

/// Logging what a server sends: every metadata value and the message are clipped, so a server
/// that writes megabytes of noise (the SDK logs an unexpected message in full, at warning)
/// cannot fill the log.
enum ClippedLog {
    /// The most characters of one value kept.
    static let maxCharacters = 500

    static func logger(_ logger: Logger) -> Logger {
        RewritingLogHandler.logger(logger, rewrite: clip)
    }

    @Sendable static func clip(_ text: String) -> String {
        text.count <= maxCharacters ? text : String(text.prefix(maxCharacters)) + "… (\(text.utf8.count) bytes in all)"
    }
}
