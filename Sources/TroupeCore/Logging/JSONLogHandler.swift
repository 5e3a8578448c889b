import Foundation
public import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// How log lines are written: `json` (one object per line, for collectors) or `text` (for people).
public enum LogFormat: String, Sendable, CaseIterable, Codable {
    case json
    case text
}

/// A swift-log handler that writes one JSON object per line:
///
/// ```json
/// {"ts":"2026-12-08T02:10:11.123Z","level":"info","message":"run claimed","logger":"troupe.worker","run_id":"run_…","attempt":"1"}
/// ```
///
/// `ts` (RFC 3339, UTC, milliseconds), `level`, `message` and `logger` come first; then
/// `run_id`, `step`, `activity`, `tenant`, `trace_id` and `span_id` when the metadata holds
/// them (`run` counts as `run_id`); then the other metadata by name (one that would take a
/// field's name gets the prefix `meta_`), lists and maps as JSON. Every text — message and
/// metadata — goes through `redact` first (the ``Redactor``'s layer: no key reaches a log).
public struct JSONLogHandler: LogHandler {
    public let label: String
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let write: @Sendable (String) -> Void
    private let redact: @Sendable (String) -> String
    private let now: @Sendable () -> Date

    /// The fields that come first, in this order.
    static let leadingFields = ["ts", "level", "message", "logger"]
    /// Metadata promoted to fields of their own (`run` is written as `run_id`), in this order.
    static let contextFields = ["run_id", "step", "activity", "tenant", "trace_id", "span_id"]

    /// - Parameters:
    ///   - write: takes each line, newline included (default: standard error, one `write(2)` a line).
    ///   - redact: applied to every text (default: ``Redactor/shared``).
    ///   - now: the clock of `ts`.
    public init(
        label: String, logLevel: Logger.Level = .info, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider,
        redact: @escaping @Sendable (String) -> String = { Redactor.shared.redact($0) },
        now: @escaping @Sendable () -> Date = { Date() },
        write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError
    ) {
        self.label = label
        self.logLevel = logLevel
        self.metadataProvider = metadataProvider
        self.redact = redact
        self.now = now
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        write(line(level: event.level, message: event.message.description, metadata: merged) + "\n")
    }

    /// The JSON line (without its newline) for one event.
    func line(level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        var fields: [(String, String)] = [
            ("ts", Self.quoted(Self.timestamp(now()))), ("level", Self.quoted(level.rawValue)), ("message", quoted(message)),
            ("logger", Self.quoted(label)),
        ]
        var rest = metadata
        if rest["run_id"] == nil, let run = rest.removeValue(forKey: "run") { rest["run_id"] = run }
        for name in Self.contextFields {
            if let value = rest.removeValue(forKey: name) { fields.append((name, json(value))) }
        }
        let taken = Set(Self.leadingFields + Self.contextFields)
        for (name, value) in rest.sorted(by: { $0.key < $1.key }) {
            fields.append((taken.contains(name) ? "meta_" + name : name, json(value)))
        }
        return "{" + fields.map { Self.quoted($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }

    private func quoted(_ text: String) -> String {
        Self.quoted(redact(text))
    }

    private func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return quoted(text)
        case .stringConvertible(let value): return quoted(value.description)
        case .array(let values): return "[" + values.map(json).joined(separator: ",") + "]"
        case .dictionary(let members):
            return "{" + members.sorted { $0.key < $1.key }.map { Self.quoted($0.key) + ":" + json($0.value) }.joined(separator: ",") + "}"
        }
    }

    /// `text` as a JSON string in which nothing can end a line or steer a terminal: besides
    /// JSON's own escapes, C1 controls, the Unicode line and paragraph separators and the
    /// bidirectional controls are written as `\uXXXX`.
    static func quoted(_ text: String) -> String {
        let json = JSONValue.string(text).jsonString
        guard json.unicodeScalars.contains(where: isHazard) else { return json }
        var escaped = String.UnicodeScalarView()
        for scalar in json.unicodeScalars {
            if isHazard(scalar) {
                escaped.append(contentsOf: String(format: "\\u%04x", scalar.value).unicodeScalars)
            } else {
                escaped.append(scalar)
            }
        }
        return String(escaped)
    }

    private static func isHazard(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x7F...0x9F, 0x2028, 0x2029, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    /// RFC 3339 in UTC with milliseconds: `2026-12-08T02:10:11.123Z`.
    static func timestamp(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        let milliseconds = Int((date.timeIntervalSince1970 - Double(seconds)) * 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), min(999, max(0, milliseconds)))
    }

    /// Writes a line to standard error whole: one line at a time in this process (a long line
    /// may take several `write(2)`s), retried when interrupted; a line given up on (standard
    /// error closed, or stuck) is ended with a newline so that the next one starts on its own.
    public static let standardError: @Sendable (String) -> Void = { line in
        writing.withLock { _ in
            let bytes = Array(line.utf8)
            var offset = 0
            var stalls = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress! + offset, $0.count - offset) }
                if written > 0 {
                    offset += written
                    continue
                }
                if written < 0, errno == EINTR { continue }
                if written < 0, errno == EAGAIN || errno == EWOULDBLOCK, stalls < 100 {
                    stalls += 1
                    usleep(1000)
                    continue
                }
                if offset > 0 { _ = Glibc.write(2, "\n", 1) }
                return
            }
        }
    }

    private static let writing = Mutex(())
}

/// How this process logs: the format and the levels, set once the command line and settings are
/// read (``configure(format:level:levels:)``); the handlers that `LoggingSystem` makes for new
/// loggers follow it (``handler(label:)``).
public enum LogOutput {
    private struct State {
        var format = LogFormat.text
        var level = Logger.Level.warning
        var levels: [String: Logger.Level] = [:]
    }

    private static let state = Mutex(State())

    /// Sets the format, the default level and the levels per logger (by label; a label also
    /// covers the loggers below it: `troupe.mcp` covers `troupe.mcp.github`).
    public static func configure(format: LogFormat, level: Logger.Level, levels: [String: Logger.Level] = [:]) {
        state.withLock { $0 = State(format: format, level: level, levels: levels) }
    }

    public static var format: LogFormat { state.withLock { $0.format } }

    /// The level of the logger labelled `label`: its own (or its nearest parent's) from the
    /// levels, else the default.
    public static func level(for label: String) -> Logger.Level {
        state.withLock { state in
            var name = Substring(label)
            while true {
                if let level = state.levels[String(name)] { return level }
                guard let dot = name.lastIndex(of: ".") else { return state.level }
                name = name[..<dot]
            }
        }
    }

    /// The handler for a new logger: JSON lines or `text` through `textHandler`, at its level.
    public static func handler(label: String, textHandler: (String) -> any LogHandler) -> any LogHandler {
        var handler: any LogHandler = format == .json ? JSONLogHandler(label: label) : textHandler(label)
        handler.logLevel = level(for: label)
        return handler
    }
}
