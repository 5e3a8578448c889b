import Foundation

/// Any JSON value: what models send as tool arguments and what tools return.
///
/// Integers and floating-point numbers are kept apart so that `3` round-trips as `3`, not `3.0`,
/// and an integer beyond `Int` keeps its digits (``bigInteger(_:)``), so an ID the model wrote is
/// journaled and passed on as it was written.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    /// An integer beyond `Int`'s range that a `Double` cannot hold exactly, with at most
    /// ``maximumBigIntegerDigits`` digits, kept as its decimal text (an optional `-`, then digits,
    /// no leading zeros). A `Double` would turn `12345678901234567890123` into
    /// `1.2345678901234568e+22`. (One a `Double` holds exactly, such as `1e20`, is a `double`, so
    /// that a value reads back the same from the journal however it was written.) Where no exact
    /// form exists (an MCP server's arguments), it is sent as the nearest `Double`.
    case bigInteger(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = Self.bigInteger(near: value, in: container) ?? .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "Not a JSON value")
        }
    }

    /// The number as ``bigInteger(_:)`` when `approximate` (what a `Double` made of it) is an
    /// integer beyond `Int` that `Decimal` holds exactly and the `Double` does not; only then is
    /// the costlier `Decimal` decoding tried.
    private static func bigInteger(near approximate: Double, in container: any SingleValueDecodingContainer) -> JSONValue? {
        guard approximate.rounded() == approximate, abs(approximate) >= 0x1p63, abs(approximate) < 1e38,
            let decimal = try? container.decode(Decimal.self), !decimal.isNaN
        else { return nil }
        var value = decimal
        var rounded = Decimal()
        NSDecimalRound(&rounded, &value, 0, .plain)
        guard rounded == decimal else { return nil }
        return bigInteger(decimal.description, approximately: approximate)
    }

    /// `.bigInteger(digits)` if `approximate` is not exactly that integer (else `.double`), or
    /// `nil` if there are too many digits to keep.
    package static func bigInteger(_ digits: String, approximately approximate: Double) -> JSONValue? {
        guard digits.utf8.count(where: { $0 != UInt8(ascii: "-") }) <= maximumBigIntegerDigits else { return nil }
        if let exact = Int128(exactly: approximate), String(exact) == digits { return .double(approximate) }
        return .bigInteger(digits)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .bigInteger(let digits): try container.encode(Decimal(string: digits) ?? 0)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

extension JSONValue {
    /// The most digits a ``bigInteger(_:)`` keeps: any integer this long is exact in a `Decimal`
    /// (the `Codable` form). Longer integers are read as `Double`s.
    public static let maximumBigIntegerDigits = 38

    /// Parses JSON text. Throws a ``TroupeError`` with code `invalidJSON` and a short reason.
    public static func parse(_ text: String) throws(TroupeError) -> JSONValue {
        try JSONParser.parse(text.utf8)
    }

    /// Parses JSON bytes. Throws a ``TroupeError`` with code `invalidJSON` and a short reason.
    public static func parse(_ data: Data) throws(TroupeError) -> JSONValue {
        try JSONParser.parse(data)
    }

    /// Compact JSON text with sorted keys, so equal values always render the same.
    public var jsonString: String {
        var writer = JSONWriter()
        writer.value(self)
        return writer.text
    }

    /// The name of this value's JSON type, as JSON Schema spells it.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .int, .bigInteger: "integer"
        case .double: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    public var stringValue: String? {
        if case .string(let value) = self { value } else { nil }
    }

    public var intValue: Int? {
        switch self {
        case .int(let value): value
        case .double(let value) where value.rounded() == value && abs(value) < 9.0e15: Int(value)
        default: nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .int(let value): Double(value)
        case .double(let value): value
        case .bigInteger(let digits): Double(digits)
        default: nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let value) = self { value } else { nil }
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { value } else { nil }
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let value) = self { value } else { nil }
    }

    /// The member `key` of an object, or `nil`.
    public subscript(key: String) -> JSONValue? {
        objectValue?[key]
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(nilLiteral: ()) { self = .null }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}
