/// Reads the members of a JSON object by name, for formats read on a hot path without `Codable`.
///
/// A member that is missing or `null` reads as `nil`; one of the wrong type is an error naming its
/// path (`choices[0].message.content is not a string`), as `JSONCoding.describe` would.
package struct JSONFields {
    package let members: [String: JSONValue]
    package let path: String

    /// `value` must be an object.
    package init(_ value: JSONValue, path: String = "") throws(TroupeError) {
        guard case .object(let members) = value else {
            throw TroupeError(.invalidJSON, "\(path.isEmpty ? "the value" : "field '\(path)'") is not an object")
        }
        self.members = members
        self.path = path
    }

    package func string(_ key: String) throws(TroupeError) -> String? {
        switch members[key] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        default: throw mismatch(key, "a string")
        }
    }

    package func int(_ key: String) throws(TroupeError) -> Int? {
        switch members[key] {
        case nil, .null?: return nil
        case let value?:
            guard let number = value.intValue else { throw mismatch(key, "an integer") }
            return number
        }
    }

    package func object(_ key: String) throws(TroupeError) -> JSONFields? {
        guard let value = members[key], value != .null else { return nil }
        return try JSONFields(value, path: child(key))
    }

    /// An array of objects.
    package func objects(_ key: String) throws(TroupeError) -> [JSONFields]? {
        switch members[key] {
        case nil, .null?: return nil
        case .array(let elements)?:
            var fields: [JSONFields] = []
            fields.reserveCapacity(elements.count)
            for (index, element) in elements.enumerated() {
                fields.append(try JSONFields(element, path: "\(child(key))[\(index)]"))
            }
            return fields
        default: throw mismatch(key, "an array")
        }
    }

    private func child(_ key: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    private func mismatch(_ key: String, _ expected: String) -> TroupeError {
        TroupeError(.invalidJSON, "field '\(child(key))' is not \(expected)")
    }
}
