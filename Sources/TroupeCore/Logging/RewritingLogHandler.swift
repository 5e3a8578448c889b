public import Logging

/// A log handler that rewrites every message and metadata value before its base handler writes
/// them: clipped (what a server sent can be megabytes) or made safe for a terminal.
public struct RewritingLogHandler: LogHandler {
    public var base: any LogHandler
    public let rewrite: @Sendable (String) -> String

    public init(base: any LogHandler, rewrite: @escaping @Sendable (String) -> String) {
        self.base = base
        self.rewrite = rewrite
    }

    /// `logger`, writing through `rewrite`.
    public static func logger(_ logger: Logger, rewrite: @escaping @Sendable (String) -> String) -> Logger {
        var rewritten = logger
        rewritten.handler = RewritingLogHandler(base: logger.handler, rewrite: rewrite)
        return rewritten
    }

    public var logLevel: Logger.Level {
        get { base.logLevel }
        set { base.logLevel = newValue }
    }

    public var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue.mapValues { .string(rewrite($0.description)) } }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue.map { .string(rewrite($0.description)) } }
    }

    public func log(event: LogEvent) {
        var event = event
        event.message = "\(rewrite(event.message.description))"
        event.metadata = event.metadata?.mapValues { .string(rewrite($0.description)) }
        base.log(event: event)
    }
}
