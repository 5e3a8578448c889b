import Logging

/// Writes log lines through ``TerminalText``: their message and metadata without escape
/// sequences or control characters.
struct TerminalSafeLogHandler: LogHandler {
    var base: any LogHandler

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
        event.message = "\(TerminalText.safe(event.message.description))"
        event.metadata = event.metadata?.mapValues { .string(TerminalText.safe($0.description)) }
        base.log(event: event)
    }
}
