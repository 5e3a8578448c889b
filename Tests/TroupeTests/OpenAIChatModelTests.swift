import Foundation
import Testing
import Troupe
import TroupeTesting

@Suite struct OpenAIChatModelTests {
    @Test func deadEndpointFailsWithTransportErrorNamingIt() async throws {
        let model = try OpenAIChatModel(configuration: .init(baseURL: "http://127.0.0.1:1/v1", model: "m"))
        let error = await #expect(throws: TroupeError.self) {
            _ = try await model.complete(ChatRequest(messages: [.user("hi")]))
        }
        #expect(error?.code == .transport)
        #expect(error?.message.contains("http://127.0.0.1:1/v1/chat/completions") == true)
    }

    @Test func runAgainstDeadEndpointFailsWithRecordedCause() async throws {
        let model = try OpenAIChatModel(configuration: .init(baseURL: "http://127.0.0.1:1/v1", model: "m"))
        try await withTemporaryDirectory { directory in
            try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                let driver = try makeDriver(store: store, model: model, tools: [])
                let final = try await driver.run(goal: "x", configuration: RunConfiguration(model: "m", tools: []))
                #expect(final.status == .failed)
                #expect(final.error?.code == .planInvalid)
                #expect(final.error?.message.contains("127.0.0.1:1") == true)
                let summary = try await store.requireRun(final.runID)
                #expect(summary.status == .failed)
            }
        }
    }

    @Test func rejectsBaseURLThatIsNotHTTP() {
        #expect(throws: TroupeError.self) {
            _ = try OpenAIChatModel(configuration: .init(baseURL: "file:///etc/passwd", model: "m"))
        }
    }
}
