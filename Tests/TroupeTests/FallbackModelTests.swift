import Foundation
import Testing
import Troupe
import TroupeTesting

@Suite struct FallbackModelTests {
    typealias StreamScript = RetryingModelTests.StreamScript
    let request = ChatRequest(messages: [.user("hi")])

    static func answer(_ text: String, model: String) -> ChatResponse {
        ChatResponse(message: .assistant(text), finishReason: .stop, model: model)
    }

    @Test(arguments: [
        TroupeError(.modelAPI, "HTTP 503", details: ["status": "503"]),
        TroupeError(.rateLimited, "HTTP 429", details: ["status": "429"]),
        TroupeError(.transport, "connection refused"),
        TroupeError(.circuitOpen, "open"),
    ])
    func theNextModelAnswersWhenOneIsUnwell(failure: TroupeError) async throws {
        let primary = ScriptedModel([.failure(failure)])
        let cheaper = ScriptedModel([.response(Self.answer("from the cheaper one", model: "cheap-1"))])
        let model = try FallbackModel([.init("primary", primary), .init("cheaper", cheaper)])
        let response = try await model.complete(request)
        #expect(response.model == "cheap-1")
        #expect(response.message.content == "from the cheaper one")
        #expect(primary.requests.count == 1 && cheaper.requests.count == 1)
    }

    @Test func aRefusedRequestIsNotSentOn() async throws {
        let primary = ScriptedModel([.failure(TroupeError(.invalidInput, "HTTP 400", details: ["status": "400"]))])
        let other = ScriptedModel([.response(Self.answer("never", model: "other"))])
        let model = try FallbackModel([.init("primary", primary), .init("other", other)])
        let error = await #expect(throws: TroupeError.self) { try await model.complete(request) }
        #expect(error?.code == .invalidInput)
        #expect(error?.details["triedModels"] == nil)
        #expect(other.requests.isEmpty)
    }

    @Test func whenAllFailTheLastErrorSaysWhatWasTried() async throws {
        let model = try FallbackModel([
            .init("a", ScriptedModel([.failure(TroupeError(.modelAPI, "HTTP 500", details: ["status": "500"]))])),
            .init("b", ScriptedModel([.failure(TroupeError(.timeout, "b timed out"))])),
        ])
        let error = await #expect(throws: TroupeError.self) { try await model.complete(request) }
        #expect(error?.code == .timeout)
        #expect(error?.details["triedModels"] == "a, b")
    }

    @Test func anEmptyChainIsAConfigurationError() {
        let error = #expect(throws: TroupeError.self) { try FallbackModel([]) }
        #expect(error?.code == .configuration)
    }

    @Test func aStreamMovesOnOnlyBeforeContent() async throws {
        let second = StreamScript([([.textDelta("ok"), .completed(Self.answer("ok", model: ""))], nil)])
        let first = StreamScript([([], TroupeError(.transport, "reset"))])
        let model = try FallbackModel([.init("first", first), .init("second", second)])
        let response = try await model.collect(request)
        #expect(response.model == "second", "the entry's name when the server gave none")
        #expect(first.callCount == 1 && second.callCount == 1)

        let broken = StreamScript([([.textDelta("par")], TroupeError(.transport, "cut"))])
        let unused = StreamScript([([.completed(Self.answer("no", model: "x"))], nil)])
        let midway = try FallbackModel([.init("broken", broken), .init("unused", unused)])
        let error = await #expect(throws: TroupeError.self) { _ = try await midway.collect(request) }
        #expect(error?.code == .transport)
        #expect(unused.callCount == 0)
    }
}
