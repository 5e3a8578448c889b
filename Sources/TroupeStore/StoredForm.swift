package import Foundation
package import TroupeCore

/// How the database stores write what is not a plain column: records as JSON text and times as
/// whole milliseconds since 1970. One place, so that the SQLite and PostgreSQL stores read each
/// other's conventions the same way and fail the same way on a damaged row.
package enum StoredForm {
    /// The `runs` columns a summary is read from, in both SQL stores.
    package static let summaryColumns = """
        id, goal, status, created_at, updated_at, last_sequence, configuration, input_tokens, output_tokens,
        cached_tokens, model_calls, tool_calls, answer, error, pending_approvals
        """

    /// The summary's columns of the table (or alias) `table`.
    package static func summaryColumns(of table: String) -> String {
        summaryColumns.split(separator: ",").map { "\(table).\($0.trimmingCharacters(in: .whitespacesAndNewlines))" }
            .joined(separator: ", ")
    }

    /// Events as a store writes them: masked by the ``Redactor`` (configured secrets, credential
    /// shapes in their texts), with their JSON. The summary is computed from these, so that no
    /// column holds what the journal does not.
    package static func masked(_ events: [RunEvent]) throws(TroupeError) -> (events: [RunEvent], payloads: [String]) {
        let masked = events.map(Redactor.shared.redact)
        return (masked, try masked.map { event throws(TroupeError) in try json(event) })
    }

    /// A new run's first event as a store writes it (masked), with the goal it carries.
    package static func created(goal: String, configuration: RunConfiguration) throws(TroupeError) -> (
        event: RunEvent, payload: String, goal: String
    ) {
        let goal = Redactor.shared.redact(goal)
        let event = RunEvent.runCreated(goal: goal, configuration: configuration)
        return (event, try json(event), goal)
    }

    /// `value` as JSON text; a value that cannot be encoded is a bug (`internal`).
    package static func json<T: Encodable>(_ value: T) throws(TroupeError) -> String {
        do {
            return try JSONCoding.encodeString(value)
        } catch {
            throw TroupeError(.internal, "Cannot encode \(T.self): \(error)", underlying: error)
        }
    }

    /// The record stored as JSON `text` in `column`, `nil` for no text; a damaged record is a
    /// `storage` error naming the column.
    package static func record<T: Decodable>(_ type: T.Type, json text: String?, column: String) throws(TroupeError) -> T? {
        guard let text else { return nil }
        do {
            return try JSONCoding.decode(type, from: Data(text.utf8))
        } catch {
            throw TroupeError(.storage, "A run record cannot be read (\(column)): \(JSONCoding.describe(error)).", underlying: error)
        }
    }

    /// `date` in whole milliseconds since 1970, rounded; dates beyond what an `Int` holds
    /// saturate (a hostile cursor or filter must not trap).
    package static func millis(_ date: Date) -> Int {
        let value = (date.timeIntervalSince1970 * 1000).rounded()
        guard value.isFinite else { return value > 0 ? Int.max : Int.min }
        return Int(exactly: value) ?? (value > 0 ? Int.max : Int.min)
    }

    /// The date `millis` milliseconds after 1970.
    package static func date(millis: Int) -> Date {
        Date(timeIntervalSince1970: Double(millis) / 1000)
    }
}
