import Foundation
import Testing
import Troupe
import TroupeTesting

/// The model client's time limits against a mock that hangs, stalls or trickles: each limit cuts
/// the call with a `timeout` error naming the endpoint and the limit, in bounded time.
@Suite struct ModelTimeoutTests {
    static let request = ChatRequest(messages: [.user("hi")])

    private func client(_ mock: MockOpenAIServer, _ timeouts: ModelTimeouts) throws -> OpenAIChatModel {
        try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, model: "m", timeouts: timeouts))
    }

    /// Calls the model (streaming or not) and returns its error and how long it took.
    private func failure(of model: any ChatModel, stream: Bool) async -> (TroupeError?, Double) {
        let elapsed = stopwatch()
        do {
            _ = stream ? try await model.collect(Self.request) : try await model.complete(Self.request)
            return (nil, elapsed())
        } catch {
            return (TroupeError.wrap(error, as: .modelAPI), elapsed())
        }
    }

    @Test(arguments: [false, true])
    func aHungServerFailsAtTheFirstByteLimit(stream: Bool) async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(.hang)
            let model = try client(mock, ModelTimeouts(firstByteSeconds: 0.3, idleSeconds: 10, totalSeconds: 10))
            let (error, elapsed) = await failure(of: model, stream: stream)
            #expect(error?.code == .timeout)
            #expect(error?.details["timeout"] == "firstByte")
            #expect(error?.message.contains("\(mock.baseURL)/chat/completions") == true)
            #expect(error?.message.contains("sent no answer within 0.3 s") == true)
            #expect(elapsed >= 0.3 && elapsed < 9, "cut at its limit, long before the others (10 s)")
        }
    }

    @Test func aStreamThatStallsMidAnswerFailsAtTheIdleLimitAndIsNotRetried() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(.stall([#"{"choices":[{"index":0,"delta":{"content":"Hal"}}]}"#]))
            let client = try client(mock, ModelTimeouts(firstByteSeconds: 10, idleSeconds: 0.3, totalSeconds: 10))
            let model = try RetryingModel(client, policy: RetryPolicy(initialBackoffSeconds: 0.01))
            var received = ""
            let elapsed = stopwatch()
            let error = await #expect(throws: TroupeError.self) {
                for try await event in model.stream(Self.request) {
                    if case .textDelta(let text) = event { received += text }
                }
            }
            #expect(received == "Hal", "what arrived before the stall was delivered")
            #expect(error?.code == .timeout)
            #expect(error?.details["timeout"] == "idle")
            #expect(error?.details["deliveredEvents"] == "1")
            #expect(error?.message.contains("went silent for 0.3 s in the middle of its answer") == true)
            #expect(mock.requestCount == 1, "a stream that delivered content is not restarted")
            #expect(elapsed() < 9, "cut at the idle limit, long before the 10 s total")
        }
    }

    @Test func aSlowButSteadyStreamIsNotCut() async throws {
        try await MockOpenAIServer.withServer { mock in
            // Seven events 0.2 s apart: the answer takes longer than the idle limit, no gap does.
            mock.enqueue(.slow(.milliseconds(200)))
            let model = try client(mock, ModelTimeouts(firstByteSeconds: 10, idleSeconds: 1, totalSeconds: 10))
            let response = try await model.collect(Self.request)
            #expect(response.message.content == "Here is my answer, based on what I have.")
        }
    }

    @Test(arguments: [false, true])
    func aSteadyTrickleStillEndsAtTheTotalLimit(stream: Bool) async throws {
        try await MockOpenAIServer.withServer { mock in
            // Streaming, each event comes 0.15 s after the last; not streaming, the head comes late.
            mock.enqueue(.slow(.milliseconds(stream ? 150 : 600)))
            let timeouts = ModelTimeouts(firstByteSeconds: 10, idleSeconds: 1, totalSeconds: 0.4)
            let (error, elapsed) = await failure(of: try client(mock, timeouts), stream: stream)
            #expect(error?.code == .timeout)
            #expect(error?.details["timeout"] == "total")
            #expect(error?.message.contains("did not finish within its limit of 0.4 s") == true)
            #expect(elapsed >= 0.4 && elapsed < 9, "cut at its limit, long before the others (10 s)")
        }
    }

    /// The retrying model's deadline for the whole call cuts an attempt in flight, even when the
    /// client's own limits are far off.
    @Test func theRetryDeadlineCutsAHungAttempt() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(.hang)
            let model = try RetryingModel(
                client(mock, ModelTimeouts(firstByteSeconds: 60, idleSeconds: 60, totalSeconds: 60)),
                policy: RetryPolicy(maxAttempts: 5, initialBackoffSeconds: 0.01, deadlineSeconds: 0.4))
            let (error, elapsed) = await failure(of: model, stream: false)
            #expect(error?.code == .timeout)
            #expect(error?.details["timeout"] == "deadline")
            #expect(error?.message.contains("the call's deadline passed before an answer came") == true)
            #expect(elapsed >= 0.4 && elapsed < 9, "cut at its limit, long before the others (10 s)")
            #expect(mock.requestCount <= 1, "one attempt (if it reached the server in time): no time was left for another")
        }
    }

    /// Every attempt hangs: each is cut at the first-byte limit and retried until attempts run out.
    @Test func aServerThatKeepsHangingFailsTheCallAfterItsAttempts() async throws {
        try await MockOpenAIServer.withServer { mock in
            mock.enqueue(.hang, .hang, .hang)
            let attempts = Recorder<ModelAttempt>()
            let model = try RetryingModel(
                client(mock, ModelTimeouts(firstByteSeconds: 0.2, idleSeconds: 10, totalSeconds: 10)),
                policy: RetryPolicy(maxAttempts: 3, initialBackoffSeconds: 0.01, maxBackoffSeconds: 0.01),
                onAttempt: attempts.add)
            let (error, elapsed) = await failure(of: model, stream: true)
            #expect(error?.code == .timeout)
            #expect(error?.details["attempts"] == "3")
            #expect(error?.message.contains("gave up after 3 attempts") == true)
            #expect(attempts.all.map(\.error.details["timeout"]) == ["firstByte", "firstByte", "firstByte"])
            #expect(elapsed >= 0.6 && elapsed < 9, "three attempts cut at 0.2 s each, long before the 10 s limits")
            #expect((1...3).contains(mock.requestCount), "on a loaded machine an attempt may be cut before its request arrives")
        }
    }

    /// Nothing listens: the call fails fast, retried within its deadline, naming the endpoint and
    /// the cause.
    @Test func aDeadEndpointFailsWithinTheDeadlineNamingEndpointAndCause() async throws {
        // A socket bound and not listening: connections are refused, and no other test can take
        // the port meanwhile (a port freed by a stopped server can be, and then it hangs).
        let socket = try RefusingPort()
        defer { socket.close() }
        let port = socket.port
        let client = try OpenAIChatModel(configuration: .init(baseURL: "http://127.0.0.1:\(port)/v1", model: "m"))
        let model = try RetryingModel(client, policy: RetryPolicy(initialBackoffSeconds: 0.05, deadlineSeconds: 30))
        let (error, elapsed) = await failure(of: model, stream: false)
        #expect(error?.code == .transport, "refused three times, not cut by the deadline")
        #expect(error?.details["attempts"] == "3")
        #expect(error?.message.contains("http://127.0.0.1:\(port)/v1/chat/completions") == true)
        #expect(error?.message.lowercased().contains("connection refused") == true, "\(error?.message ?? "")")
        #expect(elapsed < 20)
    }

    @Test func timeoutsMustBePositive() throws {
        let bad = ModelTimeouts(idleSeconds: 0)
        let error = #expect(throws: TroupeError.self) {
            _ = try OpenAIChatModel(configuration: .init(baseURL: "http://127.0.0.1:1/v1", model: "m", timeouts: bad))
        }
        #expect(error?.message.contains("idleSeconds") == true)
        let connect = OpenAIChatModel.httpClientConfiguration(timeouts: ModelTimeouts(connectSeconds: 2.5)).timeout.connect
        #expect(connect == .milliseconds(2_500))
    }
}
