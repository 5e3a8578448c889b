import Foundation
import Testing
import Troupe
import TroupeTesting

/// The README's library quick start, kept compiling and working.
@Suite struct ReadmeExampleTests {
    @Test func libraryQuickStartWorks() async throws {
        try await withTemporaryDirectory { directory in
            try "hello".write(toFile: directory + "/hello.txt", atomically: true, encoding: .utf8)
            // --- README example starts (with "." → directory, "runs.db" → directory + "/runs.db") ---
            let mock = try await MockOpenAIServer.start()  // or your own server: OPENAI_BASE_URL
            let model = try OpenAIChatModel(configuration: .init(baseURL: mock.baseURL, apiKey: nil, model: "gpt-4o-mini"))
            let workspace = try Workspace(directory)
            let tools = try ToolRegistry(FileTools.all(workspace: workspace))
            let final = try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                let driver = RunDriver(store: store, model: model, tools: tools)
                return try await driver.run(
                    goal: "List the files here and summarize them",
                    configuration: RunConfiguration(model: "gpt-4o-mini", workspace: workspace.root)
                )
            }
            print(final.status, final.answer ?? "")
            await mock.shutdown()
            // --- README example ends ---
            #expect(final.status == .succeeded)
        }
    }
}
