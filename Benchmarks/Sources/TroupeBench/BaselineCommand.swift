import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat

/// The same workload written as a bare loop over AsyncHTTPClient with Foundation's JSON coders:
/// no Troupe types, no journal. Troupe's figures are given as ratios to this one.
struct BaselineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baseline",
        abstract: "The workload as a plain loop (AsyncHTTPClient + Foundation JSON), for comparison."
    )

    @OptionGroup var workload: WorkloadOptions

    func run() async throws {
        var settings = HTTPClient.Configuration()
        settings.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = workload.connections
        settings.timeout.connect = workload.connectTimeout
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: settings)
        do {
            try await workload.withServer { baseURL in
                let loop = PlainLoop(client: client, endpoint: baseURL + "/chat/completions", stream: workload.stream)
                let steps = workload.steps
                try await workload.measure(mode: "baseline") {
                    let answers = try await loop.run(goal: "Echo the steps")
                    guard answers == steps else { throw ValidationError("A run gave \(answers) answers, expected \(steps).") }
                }
            }
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }
}

/// One plan-and-execute run, by hand.
struct PlainLoop: Sendable {
    let client: HTTPClient
    let endpoint: String
    let stream: Bool

    struct Message: Codable, Sendable {
        var role: String
        var content: String?
        var tool_calls: [Call]?
        var tool_call_id: String?
    }

    struct Call: Codable, Sendable {
        var id: String?
        var type: String?
        var function: Function
    }

    struct Function: Codable, Sendable {
        var name: String?
        var arguments: String?
    }

    struct Request: Encodable {
        var model = "bench"
        var messages: [Message]
        var tools: [[String: AnyEncodable]]?
        var response_format: [String: AnyEncodable]?
        var stream: Bool?
        var stream_options: [String: Bool]?
    }

    struct Response: Decodable {
        struct Choice: Decodable { var message: Message }
        var choices: [Choice]
    }

    struct Chunk: Decodable {
        struct Choice: Decodable { var delta: Delta }
        struct Delta: Decodable {
            var content: String?
            var tool_calls: [DeltaCall]?
        }
        struct DeltaCall: Decodable {
            var index: Int?
            var id: String?
            var function: Function?
        }
        var choices: [Choice]?
    }

    struct PlanDocument: Decodable {
        struct Step: Decodable { var id: String }
        var steps: [Step]
    }

    static let echoTool: [String: AnyEncodable] = [
        "type": AnyEncodable("function"),
        "function": AnyEncodable([
            "name": AnyEncodable("echo"),
            "description": AnyEncodable("Echo the text back."),
            "parameters": AnyEncodable([
                "type": AnyEncodable("object"),
                "properties": AnyEncodable(["text": AnyEncodable(["type": AnyEncodable("string")])]),
                "required": AnyEncodable(["text"]),
            ]),
        ]),
    ]

    static let planFormat: [String: AnyEncodable] = [
        "type": AnyEncodable("json_schema"),
        "json_schema": AnyEncodable(["name": AnyEncodable("troupe_plan"), "strict": AnyEncodable(true)]),
    ]

    /// Plans, then carries out each step; returns the number of step answers.
    func run(goal: String) async throws -> Int {
        let plan = try await chat(
            Request(
                messages: [Message(role: "system", content: "You are the planner."), Message(role: "user", content: goal)],
                response_format: Self.planFormat
            )
        )
        let steps = try JSONDecoder().decode(PlanDocument.self, from: Data((plan.content ?? "").utf8)).steps
        var answers = 0
        for step in steps {
            var messages = [Message(role: "system", content: "You are an executor."), Message(role: "user", content: "Do \(step.id).")]
            let first = try await chat(Request(messages: messages, tools: [Self.echoTool]))
            messages.append(first)
            for call in first.tool_calls ?? [] {
                let arguments = try JSONDecoder().decode([String: String].self, from: Data((call.function.arguments ?? "{}").utf8))
                messages.append(Message(role: "tool", content: arguments["text"] ?? "", tool_call_id: call.id))
            }
            let final = try await chat(Request(messages: messages, tools: [Self.echoTool]))
            if final.content?.isEmpty == false { answers += 1 }
        }
        return answers
    }

    private func chat(_ body: Request) async throws -> Message {
        var body = body
        if stream {
            body.stream = true
            body.stream_options = ["include_usage": true]
        }
        var request = HTTPClientRequest(url: endpoint)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: try JSONEncoder().encode(body)))
        let response = try await client.execute(request, timeout: .seconds(60))
        guard response.status == .ok else { throw ValidationError("HTTP \(response.status.code)") }
        let bytes = try await response.body.collect(upTo: 16 << 20)
        guard stream else { return try JSONDecoder().decode(Response.self, from: bytes).choices[0].message }
        var content = ""
        var calls: [Int: Call] = [:]
        for event in String(buffer: bytes).components(separatedBy: "\n\n") {
            guard event.hasPrefix("data: ") else { continue }
            let data = event.dropFirst(6)
            if data == "[DONE]" { break }
            let chunk = try JSONDecoder().decode(Chunk.self, from: Data(data.utf8))
            for choice in chunk.choices ?? [] {
                content += choice.delta.content ?? ""
                for delta in choice.delta.tool_calls ?? [] {
                    let index = delta.index ?? 0
                    var call = calls[index] ?? Call(id: nil, type: "function", function: Function(name: "", arguments: ""))
                    if let id = delta.id { call.id = id }
                    call.function.name = (call.function.name ?? "") + (delta.function?.name ?? "")
                    call.function.arguments = (call.function.arguments ?? "") + (delta.function?.arguments ?? "")
                    calls[index] = call
                }
            }
        }
        let toolCalls = calls.sorted { $0.key < $1.key }.map(\.value)
        return Message(role: "assistant", content: content, tool_calls: toolCalls.isEmpty ? nil : toolCalls)
    }
}

/// A type-erased `Encodable` for the request's free-form JSON (tool schemas, response format).
struct AnyEncodable: Encodable, @unchecked Sendable {
    // Safety: only ever built from immutable literal values (strings, bools, arrays and dictionaries of them).
    private let encodeValue: (any Encoder) throws -> Void

    init<T: Encodable>(_ value: T) {
        encodeValue = { try value.encode(to: $0) }
    }

    func encode(to encoder: any Encoder) throws { try encodeValue(encoder) }
}
