import Foundation
import Testing
@testable import TroupeCore

@Suite struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let value = try JSONValue.parse(
            #" { "a": [1, -2, 3.5, -0.25e2, 1E3, true, false, null], "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83c\udf89", "o": {}, "e": [] } "#
        )
        #expect(value["a"] == [1, -2, 3.5, -25.0, 1000.0, true, false, nil])
        #expect(value["s"] == "q\"\\/\u{8}\u{c}\n\r\té🎉")
        #expect(value["o"] == .object([:]))
        #expect(value["e"] == .array([]))
        // Integers stay integers, even beyond Int (their digits are kept).
        #expect(try JSONValue.parse("9223372036854775807") == .int(Int.max))
        #expect(try JSONValue.parse("92233720368547758070") == .bigInteger("92233720368547758070"))
        // `-0` keeps its sign (a double: an Int has none).
        #expect(try JSONValue.parse("-0").doubleValue?.sign == .minus)
    }

    @Test(arguments: [
        ("", "the text is empty"),
        ("   ", "the text is empty"),
        ("{\"a\": 1,}", "expected a quoted member name"),
        ("[1 2]", "expected ',' or ']' in an array"),
        ("{\"a\" 1}", "expected ':' after the member name"),
        ("{\"a\": 1", "expected ',' or '}' in an object"),
        ("\"abc", "the text ends inside a string"),
        ("\"a\u{1}b\"", "a control character inside a string must be escaped"),
        ("\"\\x\"", "unknown escape '\\x'"),
        ("\"\\u12G4\"", "'G' is not a hex digit"),
        ("01", "a number may not start with 0"),
        ("1.", "expected a digit after '.'"),
        ("1e", "expected a digit in the exponent"),
        ("-", "expected a digit"),
        ("tru", "unexpected character 't'"),
        ("{} {}", "unexpected text after the JSON value"),
        ("'single'", "unexpected character '''"),
    ])
    func refusesMalformedTextWithAReasonAndAnOffset(text: String, reason: String) {
        let error = #expect(throws: TroupeError.self) { try JSONValue.parse(text) }
        #expect(error?.code == .invalidJSON)
        #expect(error?.message.contains(reason) == true, "\(error?.message ?? "no error")")
        #expect(error?.message.contains("(at byte ") == true)
    }

    @Test func hostileNestingIsRefusedNotACrash() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        let error = #expect(throws: TroupeError.self) { try JSONValue.parse(deep) }
        #expect(error?.message.contains("nesting deeper than \(JSONParser.maximumDepth)") == true)
        let fine = String(repeating: "[", count: JSONParser.maximumDepth) + String(repeating: "]", count: JSONParser.maximumDepth)
        #expect((try? JSONValue.parse(fine)) != nil)
    }

    @Test func loneSurrogatesAndInvalidUTF8AreReplacedNotRefused() throws {
        #expect(try JSONValue.parse(#""\ud800x""#) == "\u{FFFD}x")
        #expect(try JSONValue.parse(Data([0x22, 0xFF, 0x41, 0x22])) == "\u{FFFD}A")
    }

    /// The writer's output reads back the same through this parser and through Foundation's.
    @Test func writerAndParserAgreeWithFoundationOnRandomValues() throws {
        var generator = SeededGenerator(seed: 42)
        for _ in 0..<300 {
            let value = randomValue(depth: 0, using: &generator)
            let text = value.jsonString
            #expect(try JSONValue.parse(text) == value, "\(text)")
            #expect(try JSONCoding.decode(JSONValue.self, from: Data(text.utf8)) == value, "\(text)")
            _ = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
        }
    }

    @Test func writerEscapesWhatJSONRequiresAndSortsKeys() {
        let value: JSONValue = ["b": "line\nquote\"back\\slash/\u{0}\u{1f}é", "a": [1, 2.5, nil, true]]
        #expect(value.jsonString == #"{"a":[1,2.5,null,true],"b":"line\nquote\"back\\slash/\u0000\u001fé"}"#)
        var writer = JSONWriter()
        writer.beginArray()
        writer.double(.infinity)
        writer.beginObject()
        writer.member("absent", nil)
        writer.member("present", "x")
        writer.endObject()
        writer.endArray()
        #expect(writer.text == #"[null,{"present":"x"}]"#)
    }

    private func randomValue(depth: Int, using generator: inout SeededGenerator) -> JSONValue {
        let kind = Int.random(in: 0..<(depth > 3 ? 5 : 7), using: &generator)
        switch kind {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &generator))
        case 2: return .int(Int.random(in: Int.min...Int.max, using: &generator))
        case 3: return .double(Double.random(in: -1e12...1e12, using: &generator).rounded() + 0.5)
        case 4: return .string(randomString(using: &generator))
        case 5: return .array((0..<Int.random(in: 0..<5, using: &generator)).map { _ in randomValue(depth: depth + 1, using: &generator) })
        default:
            var members: [String: JSONValue] = [:]
            for _ in 0..<Int.random(in: 0..<5, using: &generator) {
                members[randomString(using: &generator)] = randomValue(depth: depth + 1, using: &generator)
            }
            return .object(members)
        }
    }

    private func randomString(using generator: inout SeededGenerator) -> String {
        let alphabet: [Character] = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{1}", "\u{7f}", "é", "中", "🎉", "\u{2028}"]
        return String((0..<Int.random(in: 0..<12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
    }
}

/// A deterministic random number generator (SplitMix64) so failures reproduce.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
