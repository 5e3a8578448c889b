/// A small JSON Schema: the subset that models and tools use (type, properties, required, enum,
/// items, numeric and length bounds, additionalProperties, description).
///
/// Build one with the static helpers, validate values with ``validate(_:)``, and render the form
/// OpenAI's strict structured outputs require with ``strictForOpenAI()``.
public struct JSONSchema: Sendable, Hashable {
    /// A named property of an object schema.
    public struct Property: Sendable, Hashable {
        public var name: String
        public var schema: JSONSchema
        public init(_ name: String, _ schema: JSONSchema) {
            self.name = name
            self.schema = schema
        }
    }

    /// Allowed JSON types (`string`, `integer`, `number`, `boolean`, `array`, `object`, `null`); empty means any.
    public var types: [String]
    public var description: String?
    public var properties: [Property]
    public var required: [String]
    /// `false` forbids members not listed in ``properties``.
    public var additionalProperties: Bool?
    private var itemStorage: [JSONSchema]
    public var enumValues: [JSONValue]?
    public var minimum: Double?
    public var maximum: Double?
    public var minLength: Int?
    public var maxLength: Int?
    public var minItems: Int?
    public var maxItems: Int?

    /// The schema of an array's elements.
    public var items: JSONSchema? {
        get { itemStorage.first }
        set { itemStorage = newValue.map { [$0] } ?? [] }
    }

    public init(
        types: [String] = [],
        description: String? = nil,
        properties: [Property] = [],
        required: [String] = [],
        additionalProperties: Bool? = nil,
        items: JSONSchema? = nil,
        enumValues: [JSONValue]? = nil,
        minimum: Double? = nil,
        maximum: Double? = nil,
        minLength: Int? = nil,
        maxLength: Int? = nil,
        minItems: Int? = nil,
        maxItems: Int? = nil
    ) {
        self.types = types
        self.description = description
        self.properties = properties
        self.required = required
        self.additionalProperties = additionalProperties
        self.itemStorage = items.map { [$0] } ?? []
        self.enumValues = enumValues
        self.minimum = minimum
        self.maximum = maximum
        self.minLength = minLength
        self.maxLength = maxLength
        self.minItems = minItems
        self.maxItems = maxItems
    }

    /// An object with `properties`; all of them required unless `required` says otherwise.
    public static func object(
        _ properties: [Property],
        required: [String]? = nil,
        additionalProperties: Bool = false,
        description: String? = nil
    ) -> JSONSchema {
        JSONSchema(
            types: ["object"],
            description: description,
            properties: properties,
            required: required ?? properties.map(\.name),
            additionalProperties: additionalProperties
        )
    }

    /// A string, optionally one of `values`, with length bounds.
    public static func string(
        _ description: String? = nil,
        enum values: [String]? = nil,
        minLength: Int? = nil,
        maxLength: Int? = nil
    ) -> JSONSchema {
        JSONSchema(
            types: ["string"],
            description: description,
            enumValues: values.map { $0.map(JSONValue.string) },
            minLength: minLength,
            maxLength: maxLength
        )
    }

    /// An integer with optional bounds.
    public static func integer(_ description: String? = nil, minimum: Int? = nil, maximum: Int? = nil) -> JSONSchema {
        JSONSchema(types: ["integer"], description: description, minimum: minimum.map(Double.init), maximum: maximum.map(Double.init))
    }

    /// A number with optional bounds.
    public static func number(_ description: String? = nil, minimum: Double? = nil, maximum: Double? = nil) -> JSONSchema {
        JSONSchema(types: ["number"], description: description, minimum: minimum, maximum: maximum)
    }

    /// `true` or `false`.
    public static func boolean(_ description: String? = nil) -> JSONSchema {
        JSONSchema(types: ["boolean"], description: description)
    }

    /// An array of `items`, with optional size bounds.
    public static func array(
        of items: JSONSchema,
        _ description: String? = nil,
        minItems: Int? = nil,
        maxItems: Int? = nil
    ) -> JSONSchema {
        JSONSchema(types: ["array"], description: description, items: items, minItems: minItems, maxItems: maxItems)
    }
}

// MARK: - Validation

/// One way a value fails a schema, with the JSON path where it happened (`$.steps[0].id`).
public struct SchemaViolation: Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}

extension JSONSchema {
    /// Every violation of this schema by `value`; empty when it is valid.
    public func validate(_ value: JSONValue) -> [SchemaViolation] {
        var violations: [SchemaViolation] = []
        validate(value, at: "$", into: &violations)
        return violations
    }

    private func validate(_ value: JSONValue, at path: String, into violations: inout [SchemaViolation]) {
        if !types.isEmpty, !types.contains(where: { Self.matches(value, type: $0) }) {
            violations.append(SchemaViolation(path: path, message: "expected \(types.joined(separator: " or ")), got \(value.typeName)"))
            return
        }
        if let enumValues, !enumValues.contains(where: { Self.equal($0, value) }) {
            let allowed = enumValues.map(\.jsonString).joined(separator: ", ")
            violations.append(SchemaViolation(path: path, message: "must be one of \(allowed)"))
        }
        switch value {
        case .int, .double, .bigInteger:
            let number = value.doubleValue ?? 0
            if let minimum, number < minimum {
                violations.append(SchemaViolation(path: path, message: "must be ≥ \(Self.format(minimum))"))
            }
            if let maximum, number > maximum {
                violations.append(SchemaViolation(path: path, message: "must be ≤ \(Self.format(maximum))"))
            }
        case .string(let text):
            let length = text.count
            if let minLength, length < minLength {
                violations.append(SchemaViolation(path: path, message: "must have at least \(minLength) characters"))
            }
            if let maxLength, length > maxLength {
                violations.append(SchemaViolation(path: path, message: "must have at most \(maxLength) characters"))
            }
        case .array(let elements):
            if let minItems, elements.count < minItems {
                violations.append(SchemaViolation(path: path, message: "must have at least \(minItems) items"))
            }
            if let maxItems, elements.count > maxItems {
                violations.append(SchemaViolation(path: path, message: "must have at most \(maxItems) items"))
            }
            if let items {
                for (index, element) in elements.enumerated() {
                    items.validate(element, at: "\(path)[\(index)]", into: &violations)
                }
            }
        case .object(let members):
            for name in required where members[name] == nil {
                violations.append(SchemaViolation(path: path, message: "missing required property '\(name)'"))
            }
            for property in properties {
                if let member = members[property.name] {
                    property.schema.validate(member, at: "\(path).\(property.name)", into: &violations)
                }
            }
            if additionalProperties == false {
                let known = Set(properties.map(\.name))
                for name in members.keys.sorted() where !known.contains(name) {
                    violations.append(SchemaViolation(path: path, message: "unexpected property '\(name)'"))
                }
            }
        case .null, .bool:
            break
        }
    }

    private static func matches(_ value: JSONValue, type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("array", .array), ("object", .object): true
        case ("integer", .int), ("integer", .bigInteger): true
        case ("integer", .double(let number)): number.rounded() == number
        case ("number", .int), ("number", .double), ("number", .bigInteger): true
        default: false
        }
    }

    /// An integral number's exact decimal digits, if it has them.
    private static func integerDigits(_ value: JSONValue) -> String? {
        switch value {
        case .int(let number): String(number)
        case .bigInteger(let digits): digits
        case .double(let number): Int128(exactly: number).map { String($0) }
        default: nil
        }
    }

    private static func equal(_ lhs: JSONValue, _ rhs: JSONValue) -> Bool {
        // Integers exactly (a Double would make 12345678901234567890123 equal its neighbours).
        if let left = integerDigits(lhs), let right = integerDigits(rhs) { return left == right }
        if let left = lhs.doubleValue, let right = rhs.doubleValue { return left == right }
        return lhs == rhs
    }

    private static func format(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 1e15 ? String(Int(number)) : String(number)
    }
}

// MARK: - OpenAI strict mode

extension JSONSchema {
    /// The form OpenAI's strict structured outputs and strict tools require: every object lists all
    /// its properties as required and forbids others; properties that were optional become nullable.
    public func strictForOpenAI() -> JSONSchema {
        var schema = self
        if let items { schema.items = items.strictForOpenAI() }
        guard types.contains("object") else { return schema }
        let wasRequired = Set(required)
        schema.properties = properties.map { property in
            var inner = property.schema.strictForOpenAI()
            if !wasRequired.contains(property.name), !inner.types.isEmpty, !inner.types.contains("null") {
                inner.types.append("null")
            }
            return Property(property.name, inner)
        }
        schema.required = properties.map(\.name)
        schema.additionalProperties = false
        return schema
    }
}

// MARK: - JSON representation

extension JSONSchema {
    /// The schema as JSON Schema JSON.
    public var jsonValue: JSONValue {
        var object: [String: JSONValue] = [:]
        if types.count == 1 {
            object["type"] = .string(types[0])
        } else if !types.isEmpty {
            object["type"] = .array(types.map(JSONValue.string))
        }
        if let description { object["description"] = .string(description) }
        if types.contains("object") || !properties.isEmpty {
            object["properties"] = .object(Dictionary(uniqueKeysWithValues: properties.map { ($0.name, $0.schema.jsonValue) }))
            object["required"] = .array(required.map(JSONValue.string))
        }
        if let additionalProperties { object["additionalProperties"] = .bool(additionalProperties) }
        if let items { object["items"] = items.jsonValue }
        if let enumValues { object["enum"] = .array(enumValues) }
        if let minimum { object["minimum"] = Self.number(minimum) }
        if let maximum { object["maximum"] = Self.number(maximum) }
        if let minLength { object["minLength"] = .int(minLength) }
        if let maxLength { object["maxLength"] = .int(maxLength) }
        if let minItems { object["minItems"] = .int(minItems) }
        if let maxItems { object["maxItems"] = .int(maxItems) }
        return .object(object)
    }

    /// Reads a JSON Schema document, keeping the keywords this type understands and ignoring the rest.
    public init(jsonValue: JSONValue) throws(TroupeError) {
        guard case .object(let object) = jsonValue else {
            if jsonValue == .bool(true) {
                self.init()
                return
            }
            throw TroupeError(.schemaViolation, "A JSON Schema must be an object, got \(jsonValue.typeName).")
        }
        self.init()
        switch object["type"] {
        case .string(let type): types = [type]
        case .array(let list): types = list.compactMap(\.stringValue)
        default: types = []
        }
        description = object["description"]?.stringValue
        if case .object(let members) = object["properties"] {
            properties = try members.keys.sorted().map { name throws(TroupeError) in
                Property(name, try JSONSchema(jsonValue: members[name] ?? .null))
            }
        }
        required = object["required"]?.arrayValue?.compactMap(\.stringValue) ?? []
        additionalProperties = object["additionalProperties"]?.boolValue
        if let itemValue = object["items"] { items = try JSONSchema(jsonValue: itemValue) }
        enumValues = object["enum"]?.arrayValue
        minimum = object["minimum"]?.doubleValue
        maximum = object["maximum"]?.doubleValue
        minLength = object["minLength"]?.intValue
        maxLength = object["maxLength"]?.intValue
        minItems = object["minItems"]?.intValue
        maxItems = object["maxItems"]?.intValue
    }

    private static func number(_ value: Double) -> JSONValue {
        value.rounded() == value && abs(value) < 9e15 ? .int(Int(value)) : .double(value)
    }
}

extension JSONSchema: Codable {
    public init(from decoder: any Decoder) throws {
        try self.init(jsonValue: try JSONValue(from: decoder))
    }

    public func encode(to encoder: any Encoder) throws {
        try jsonValue.encode(to: encoder)
    }
}
