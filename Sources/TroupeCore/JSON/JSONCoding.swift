import Foundation

/// Shared JSON conventions: ISO-8601 dates, no escaped slashes; `encoder()` (for documents people
/// read) sorts keys.
package enum JSONCoding {
    package static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(formatDate(date))
        }
        return encoder
    }

    package static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = parseDate(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "Not an ISO-8601 date: \(text)")
            }
            return date
        }
        return decoder
    }

    /// One encoder and one decoder for the process: creating them per call costs more than encoding
    /// a small event. Both are safe to share (their settings are never changed after creation).
    private static let sharedEncoder = encoder()
    private static let sharedDecoder = decoder()

    /// Compact JSON, keys in the order the type encodes them, written by the streaming encoder
    /// (the journal's hot path); a value it cannot write is encoded by Foundation's, whose error
    /// is the one reported.
    package static func encode<T: Encodable>(_ value: T) throws -> Data {
        Data(try encodeBytes(value))
    }

    package static func encodeString<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encodeBytes(value), as: UTF8.self)
    }

    private static func encodeBytes<T: Encodable>(_ value: T) throws -> [UInt8] {
        do {
            return try StreamingJSONEncoder.encode(value)
        } catch {
            return Array(try sharedEncoder.encode(value))
        }
    }

    package static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        try sharedDecoder.decode(type, from: data)
    }

    /// Dates as `2026-11-25T17:38:57.123Z`: millisecond precision, always UTC.
    /// `2026-11-28T15:17:53.288Z`: UTC, to the nearest millisecond. Rounded, not truncated, so
    /// that a date read back and written again (the API, then the CLI) keeps its millisecond.
    package static func formatDate(_ date: Date) -> String {
        let millis = (date.timeIntervalSince1970 * 1000).rounded()
        guard millis.isFinite, abs(millis) < 1e17 else { return date.formatted(.iso8601) }
        let whole = Int64(millis)
        let seconds = whole >= 0 ? whole / 1000 : (whole - 999) / 1000
        let fraction = whole - seconds * 1000
        let text = Date(timeIntervalSince1970: Double(seconds)).formatted(.iso8601)
        guard text.hasSuffix("Z") else { return text }
        return text.dropLast() + "." + String(repeating: "0", count: fraction < 10 ? 2 : fraction < 100 ? 1 : 0) + String(fraction) + "Z"
    }

    package static func parseDate(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true)) {
            return date
        }
        return try? Date(text, strategy: .iso8601)
    }

    /// A one-line reason for a decoding failure, without Foundation's long debug dump.
    package static func describe(_ error: any Error) -> String {
        guard let decoding = error as? DecodingError else { return "\(error)" }
        switch decoding {
        case .dataCorrupted(let context):
            return context.underlyingError.map { "\($0.localizedDescription)" } ?? context.debugDescription
        case .keyNotFound(let key, let context):
            return "missing field '\(path(context.codingPath + [key]))'"
        case .typeMismatch(let type, let context):
            return "field '\(path(context.codingPath))' is not \(type)"
        case .valueNotFound(let type, let context):
            return "field '\(path(context.codingPath))' is null, expected \(type)"
        @unknown default:
            return "\(decoding)"
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
}
