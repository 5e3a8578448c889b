import Foundation
import Testing
@testable import TroupeCore

@Suite struct StreamingJSONEncoderTests {
    static let error = TroupeError(.modelAPI, "HTTP 503 from http://127.0.0.1/v1: overloaded", details: ["status": "503", "endpoint": "e"])
    static let key = ActivityKey(step: "s1", attempt: 1, callIndex: 2)
    static let plan = Plan(steps: [
        PlanStep(id: "s1", title: "One", instruction: "Do \"one\"\n", tools: ["echo"]),
        PlanStep(id: "s2", title: "Two", instruction: "Do two", tools: [], dependsOn: ["s1"]),
    ])
    static let response = ChatResponse(
        message: .assistant("é 🎉", toolCalls: [ToolCall(id: "c1", name: "echo", arguments: #"{"text":"a\"b"}"#)]),
        finishReason: .toolCalls, usage: Usage(inputTokens: 3, outputTokens: 4, cachedTokens: 1), model: "m")

    /// Every kind of journal event: the streaming encoder's JSON reads back to the same event, and
    /// says the same as Foundation's encoder (key order aside).
    static let events: [RunEvent] = [
        .runCreated(goal: "goal\twith\u{1}control", configuration: RunConfiguration(model: "m", workspace: "/w", tools: ["echo"])),
        .leaseAcquired(owner: "host/1/n"),
        .configurationUpdated(configuration: RunConfiguration()),
        .activityStarted(key: key, kind: .model(purpose: .plan)),
        .activityStarted(key: key, kind: .tool(name: "echo", callID: "c1", effect: .sideEffecting)),
        .activityCompleted(key: key, result: .model(response)),
        .activityCompleted(key: key, result: .tool(ToolOutput("out", isError: true))),
        .activityFailed(key: key, error: error),
        .modelCallRetried(key: key, attempt: 2, error: error, retryDelaySeconds: 1.5),
        .planProposed(round: 0, plan: plan),
        .planRejected(round: 1, attempt: 2, problems: ["a", "b"]),
        .stepStarted(stepID: "s1", attempt: 1),
        .stepCompleted(stepID: "s1", output: ""),
        .stepFailed(stepID: "s1", error: error),
        .replanned(round: 1, plan: plan, reason: "why"),
        .runNeedsAttention(key: key, reason: "in flight"),
        .attentionResolved(key: key, resolution: .skip),
        .runCancelled(reason: "stop"),
        .runSucceeded(answer: "done"),
        .runFailed(error: error),
    ]

    @Test(arguments: events)
    func journalEventsRoundTripAndMatchFoundation(event: RunEvent) throws {
        let streamed = try StreamingJSONEncoder.encode(event)
        #expect(try JSONCoding.decode(RunEvent.self, from: Data(streamed)) == event)
        let foundation = try JSONCoding.encoder().encode(event)
        // Foundation writes 300.0 as 300; this encoder keeps the ".0" (a double stays a double).
        #expect(try numbersAsDoubles(JSONValue.parse(Data(streamed))) == numbersAsDoubles(JSONValue.parse(foundation)))
    }

    private func numbersAsDoubles(_ value: JSONValue) -> JSONValue {
        switch value {
        case .int(let number): .double(Double(number))
        case .array(let elements): .array(elements.map(numbersAsDoubles))
        case .object(let members): .object(members.mapValues(numbersAsDoubles))
        default: value
        }
    }

    @Test func datesNestedValuesAndJSONValuesAreWrittenAsJSONCodingReadsThem() throws {
        struct Record: Codable, Equatable {
            var at: Date
            var tags: [String: [Int]]
            var value: JSONValue
            var optional: String?
            var nested: [[Double]]
        }
        let record = Record(
            at: Date(timeIntervalSince1970: 1_764_000_000.125), tags: ["a": [1, 2]], value: ["z": 1, "a": [true, nil]], optional: nil,
            nested: [[1.5], []])
        let text = String(decoding: try StreamingJSONEncoder.encode(record), as: UTF8.self)
        #expect(text.contains(#""value":{"a":[true,null],"z":1}"#))
        #expect(text.contains(#""at":"2025-11-24T16:00:00.125Z""#))
        #expect(!text.contains("optional"))
        #expect(try JSONCoding.decode(Record.self, from: Data(text.utf8)) == record)
    }

    @Test func nonFiniteNumbersAreRefusedAsFoundationRefusesThem() {
        #expect(throws: EncodingError.self) { try StreamingJSONEncoder.encode([1.0, .nan]) }
        #expect(throws: EncodingError.self) { try JSONCoding.encode(["x": Double.infinity]) }
    }

    /// A type that writes to a container after moving on to another is refused by the streaming
    /// encoder (it would write wrong JSON) and encoded by Foundation's instead.
    @Test func interleavedContainersAreRefusedAndFallBackToFoundation() throws {
        struct Interleaved: Encodable {
            enum Keys: String, CodingKey { case a, b, c }
            func encode(to encoder: any Encoder) throws {
                var outer = encoder.container(keyedBy: Keys.self)
                var first = outer.nestedContainer(keyedBy: Keys.self, forKey: .a)
                var second = outer.nestedContainer(keyedBy: Keys.self, forKey: .b)
                try second.encode(2, forKey: .c)
                try first.encode(1, forKey: .c)
            }
        }
        #expect(throws: EncodingError.self) { try StreamingJSONEncoder.encode(Interleaved()) }
        let text = try JSONCoding.encodeString(Interleaved())
        #expect(try JSONValue.parse(text) == ["a": ["c": 1], "b": ["c": 2]])
    }

    @Test func aContainerAskedForTwiceIsTheSameObject() throws {
        struct Twice: Encodable {
            enum Keys: String, CodingKey { case a, b }
            func encode(to encoder: any Encoder) throws {
                var first = encoder.container(keyedBy: Keys.self)
                try first.encode(1, forKey: .a)
                var again = encoder.container(keyedBy: Keys.self)
                try again.encode(2, forKey: .b)
            }
        }
        #expect(try JSONValue.parse(Data(StreamingJSONEncoder.encode([Twice(), Twice()]))) == [["a": 1, "b": 2], ["a": 1, "b": 2]])
    }
}
