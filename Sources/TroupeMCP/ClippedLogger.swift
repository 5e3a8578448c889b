import Logging

/// A logger for what a server sends: every metadata value and the message are clipped, so a
/// server that writes megabytes of noise (the SDK logs an unexpected message in full, at
/// warning) cannot fill the log.
struct ClippingLogHandler: LogHandler {
    /// The most characters of one value kept.
    static let maxCharacters = 500

    var base: any LogHandler

    static func logger(_ logger: Logger) -> Logger {
        var clipped = logger
        clipped.handler = ClippingLogHandler(base: logger.handler)
        return clipped
    }

    var logLevel: Logger.Level {
        get { base.logLevel }
        set { base.logLevel = newValue }
    }

    var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        var event = event
        event.message = "\(Self.clip(event.message.description))"
        event.metadata = event.metadata?.mapValues { .string(Self.clip($0.description)) }
        base.log(event: event)
    }

    static func clip(_ text: String) -> String {
        text.count <= maxCharacters ? text : String(text.prefix(maxCharacters)) + "… (\(text.utf8.count) bytes in all)"
    }
}
