public import Foundation
public import OpenAPIRuntime
import TroupeCore

/// Dates on the wire as the run documents write them (ISO 8601 with milliseconds, as `troupe
/// show --json`); either form of ISO 8601 is read.
public struct APIDates: DateTranscoder {
    public init() {}

    public func encode(_ date: Date) throws -> String {
        JSONCoding.formatDate(date)
    }

    public func decode(_ text: String) throws -> Date {
        guard let date = JSONCoding.parseDate(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "'\(text.prefix(40))' is not an ISO-8601 date."))
        }
        return date
    }

    /// The generated server's and client's configuration: compact JSON with sorted keys, and
    /// `/` written as it is (not `\/`), as `troupe show --json` writes it.
    public static let configuration = Configuration(
        dateTranscoder: APIDates(), jsonEncodingOptions: [.sortedKeys, .withoutEscapingSlashes])
}
