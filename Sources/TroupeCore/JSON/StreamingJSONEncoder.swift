import Foundation

/// Encodes `Encodable` values straight into JSON bytes, for the journal's hot path.
///
/// Foundation's `JSONEncoder` first builds a tree of every value (and sorts keys), then writes it.
/// This encoder writes as `encode(to:)` runs: a container's opening bracket when it is created,
/// its closing bracket when the value that created it is done (or when its parent is written to
/// again). That covers how `Codable` types use containers — synthesized conformances and ours —
/// one after another; a container written to after a sibling or its parent moved on is refused
/// with an error rather than producing wrong JSON. Keys come out in the order they are encoded
/// (a `JSONValue`'s sorted; a plain dictionary's in its own order).
/// Dates use `JSONCoding`'s ISO-8601 form, so `JSONCoding.decode` reads the output back.
package enum StreamingJSONEncoder {
    /// The JSON text of `value`.
    package static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let state = State()
        try state.encodeValue(value, codingPath: [])
        guard state.failure == nil else { throw state.failure! }
        return state.writer.bytes
    }

    /// The writer and the stack of containers still open, shared by every container of one call.
    fileprivate final class State {
        var writer = JSONWriter(capacity: 512)
        /// The containers still open, innermost last: whether each is an object, and its serial
        /// number (a container finished and another opened at the same depth are told apart).
        var open: [(object: Bool, serial: Int)] = []
        private var serials = 0
        /// A misuse found by a non-throwing call (nested containers cannot throw), reported at the end.
        var failure: EncodingError?

        /// Encodes one value in place and closes whatever containers it opened.
        func encodeValue<T: Encodable>(_ value: T, codingPath: [any CodingKey]) throws {
            let mark = open.count
            // Metatype checks, not dynamic casts: this runs for every nested value.
            if T.self == JSONValue.self {
                writer.value(value as! JSONValue)  // keys sorted, as everywhere JSONValue is written
            } else if T.self == Date.self {
                writer.string(JSONCoding.formatDate(value as! Date))
            } else if T.self == URL.self {
                writer.string((value as! URL).absoluteString)
            } else if T.self == Data.self {
                writer.string((value as! Data).base64EncodedString())
            } else {
                try value.encode(to: Encoder(state: self, depth: mark, codingPath: codingPath))
            }
            close(downTo: mark)
            if let failure { throw failure }
        }

        func close(downTo depth: Int) {
            while open.count > depth {
                if open.removeLast().object { writer.endObject() } else { writer.endArray() }
            }
        }

        /// Before a container writes: close its finished children; refuse if it was closed itself.
        func prepare(_ container: Opened, codingPath: [any CodingKey]) -> Bool {
            guard open.count >= container.depth, open[container.depth - 1].serial == container.serial else {
                failure =
                    failure
                    ?? EncodingError.invalidValue(
                        (), .init(codingPath: codingPath, debugDescription: "A container was written to after it was finished."))
                return false
            }
            close(downTo: container.depth)
            return true
        }

        func begin(object: Bool) -> Opened {
            if object { writer.beginObject() } else { writer.beginArray() }
            serials += 1
            open.append((object, serials))
            return Opened(depth: open.count, serial: serials)
        }

        func finite(_ value: Double, _ codingPath: [any CodingKey]) throws -> Double {
            guard value.isFinite else {
                throw EncodingError.invalidValue(value, .init(codingPath: codingPath, debugDescription: "\(value) is not valid in JSON."))
            }
            return value
        }
    }

    /// Where a container sits on the stack of open ones.
    fileprivate struct Opened {
        var depth: Int
        var serial: Int
    }

    fileprivate struct Encoder: Swift.Encoder {
        let state: State
        /// Open containers when this encoder was made: its own container, if any, is the next one.
        let depth: Int
        let codingPath: [any CodingKey]
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            KeyedEncodingContainer(KeyedContainer<Key>(state: state, opened: own(object: true), codingPath: codingPath))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            UnkeyedContainer(state: state, opened: own(object: false), codingPath: codingPath)
        }

        /// The encoder's container: asked for twice (as class hierarchies do), it is the same one.
        private func own(object: Bool) -> Opened {
            if state.open.count > depth, state.open[depth].object == object {
                return Opened(depth: depth + 1, serial: state.open[depth].serial)
            }
            return state.begin(object: object)
        }

        func singleValueContainer() -> any SingleValueEncodingContainer {
            SingleValueContainer(state: state, codingPath: codingPath)
        }
    }

    fileprivate struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let state: State
        let opened: Opened
        let codingPath: [any CodingKey]

        private func key(_ key: Key) -> Bool {
            guard state.prepare(opened, codingPath: codingPath + [key]) else { return false }
            state.writer.key(key.stringValue)
            return true
        }

        mutating func encodeNil(forKey key: Key) throws { if self.key(key) { state.writer.null() } }
        mutating func encode(_ value: Bool, forKey key: Key) throws { if self.key(key) { state.writer.bool(value) } }
        mutating func encode(_ value: String, forKey key: Key) throws { if self.key(key) { state.writer.string(value) } }
        mutating func encode(_ value: Double, forKey key: Key) throws {
            if self.key(key) { state.writer.double(try state.finite(value, codingPath + [key])) }
        }
        mutating func encode(_ value: Float, forKey key: Key) throws { try encode(Double(value), forKey: key) }
        mutating func encode(_ value: Int, forKey key: Key) throws { if self.key(key) { state.writer.int(value) } }
        mutating func encode(_ value: Int8, forKey key: Key) throws { try encode(Int(value), forKey: key) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { try encode(Int(value), forKey: key) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { try encode(Int(value), forKey: key) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { try encode(Int(value), forKey: key) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { if self.key(key) { state.writer.raw(String(value)) } }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { try encode(Int(value), forKey: key) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { try encode(Int(value), forKey: key) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { try encode(Int(value), forKey: key) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { if self.key(key) { state.writer.raw(String(value)) } }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            if self.key(key) { try state.encodeValue(value, codingPath: codingPath + [key]) }
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key)
            -> KeyedEncodingContainer<NestedKey>
        {
            _ = self.key(key)
            return KeyedEncodingContainer(
                KeyedContainer<NestedKey>(state: state, opened: state.begin(object: true), codingPath: codingPath + [key]))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            _ = self.key(key)
            return UnkeyedContainer(state: state, opened: state.begin(object: false), codingPath: codingPath + [key])
        }

        mutating func superEncoder() -> any Swift.Encoder {
            superEncoder(forKey: Key(stringValue: "super")!)
        }

        mutating func superEncoder(forKey key: Key) -> any Swift.Encoder {
            _ = self.key(key)
            return Encoder(state: state, depth: state.open.count, codingPath: codingPath + [key])
        }
    }

    fileprivate struct UnkeyedContainer: UnkeyedEncodingContainer {
        let state: State
        let opened: Opened
        let codingPath: [any CodingKey]
        private(set) var count = 0

        init(state: State, opened: Opened, codingPath: [any CodingKey]) {
            self.state = state
            self.opened = opened
            self.codingPath = codingPath
        }

        private mutating func next() -> Bool {
            count += 1
            return state.prepare(opened, codingPath: codingPath)
        }

        mutating func encodeNil() throws { if next() { state.writer.null() } }
        mutating func encode(_ value: Bool) throws { if next() { state.writer.bool(value) } }
        mutating func encode(_ value: String) throws { if next() { state.writer.string(value) } }
        mutating func encode(_ value: Double) throws { if next() { state.writer.double(try state.finite(value, codingPath)) } }
        mutating func encode(_ value: Float) throws { try encode(Double(value)) }
        mutating func encode(_ value: Int) throws { if next() { state.writer.int(value) } }
        mutating func encode(_ value: Int8) throws { try encode(Int(value)) }
        mutating func encode(_ value: Int16) throws { try encode(Int(value)) }
        mutating func encode(_ value: Int32) throws { try encode(Int(value)) }
        mutating func encode(_ value: Int64) throws { try encode(Int(value)) }
        mutating func encode(_ value: UInt) throws { if next() { state.writer.raw(String(value)) } }
        mutating func encode(_ value: UInt8) throws { try encode(Int(value)) }
        mutating func encode(_ value: UInt16) throws { try encode(Int(value)) }
        mutating func encode(_ value: UInt32) throws { try encode(Int(value)) }
        mutating func encode(_ value: UInt64) throws { if next() { state.writer.raw(String(value)) } }
        mutating func encode<T: Encodable>(_ value: T) throws {
            if next() { try state.encodeValue(value, codingPath: codingPath) }
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            _ = next()
            return KeyedEncodingContainer(
                KeyedContainer<NestedKey>(state: state, opened: state.begin(object: true), codingPath: codingPath))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            _ = next()
            return UnkeyedContainer(state: state, opened: state.begin(object: false), codingPath: codingPath)
        }

        mutating func superEncoder() -> any Swift.Encoder {
            _ = next()
            return Encoder(state: state, depth: state.open.count, codingPath: codingPath)
        }
    }

    fileprivate struct SingleValueContainer: SingleValueEncodingContainer {
        let state: State
        let codingPath: [any CodingKey]

        mutating func encodeNil() throws { state.writer.null() }
        mutating func encode(_ value: Bool) throws { state.writer.bool(value) }
        mutating func encode(_ value: String) throws { state.writer.string(value) }
        mutating func encode(_ value: Double) throws { state.writer.double(try state.finite(value, codingPath)) }
        mutating func encode(_ value: Float) throws { try encode(Double(value)) }
        mutating func encode(_ value: Int) throws { state.writer.int(value) }
        mutating func encode(_ value: Int8) throws { try encode(Int(value)) }
        mutating func encode(_ value: Int16) throws { try encode(Int(value)) }
        mutating func encode(_ value: Int32) throws { try encode(Int(value)) }
        mutating func encode(_ value: Int64) throws { try encode(Int(value)) }
        mutating func encode(_ value: UInt) throws { state.writer.raw(String(value)) }
        mutating func encode(_ value: UInt8) throws { try encode(Int(value)) }
        mutating func encode(_ value: UInt16) throws { try encode(Int(value)) }
        mutating func encode(_ value: UInt32) throws { try encode(Int(value)) }
        mutating func encode(_ value: UInt64) throws { state.writer.raw(String(value)) }
        mutating func encode<T: Encodable>(_ value: T) throws { try state.encodeValue(value, codingPath: codingPath) }
    }
}
