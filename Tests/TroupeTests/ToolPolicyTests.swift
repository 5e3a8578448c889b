import Foundation
import Testing
import Troupe
import TroupeSettings
import TroupeTesting

/// Tool policies: what is offered, what needs a person, and limits per tool.
@Suite struct ToolPolicyTests {
    let context = ToolContext(runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: "/tmp", logger: .init(label: "t"))
    static let echo = ToolCall(id: "c1", name: "echo", arguments: #"{"text":"hi"}"#)

    /// A tool that waits until cancelled.
    struct Sleeper: Tool {
        let name = "sleeper"
        let description = "Waits."
        let effect = ToolEffect.readOnly
        let parameters: JSONSchema = .object([])

        func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
            try await Task.sleep(for: .seconds(30))
            return ToolOutput("woke")
        }
    }

    @Test func patternsAllowDenyAndRequireApproval() {
        let policy = ToolPolicy(
            allow: ["fs_*", "web_fetch", "mcp_github_*"], deny: ["fs_write", "mcp_github_delete_*"], requireApproval: ["mcp_*"],
            limits: [
                "fs_*": ToolLimits(maxCallsPerRun: 50), "fs_read": ToolLimits(timeoutSeconds: 5), "*": ToolLimits(maxCallsPerRun: 500),
            ])
        #expect(policy.permits("fs_read") && policy.permits("fs_search") && policy.permits("web_fetch"))
        #expect(!policy.permits("fs_write") && !policy.permits("shell_run") && !policy.permits("mcp_github_delete_repo"))
        #expect(policy.permits("mcp_github_create_issue") && policy.needsApproval("mcp_github_create_issue"))
        #expect(!policy.needsApproval("fs_read"))
        #expect(policy.limits(for: "fs_read") == ToolLimits(timeoutSeconds: 5), "an exact entry wins")
        #expect(policy.limits(for: "fs_list") == ToolLimits(maxCallsPerRun: 50), "the longest pattern wins")
        #expect(policy.limits(for: "web_fetch") == ToolLimits(maxCallsPerRun: 500))
        #expect(ToolPolicy().limits(for: "x") == ToolLimits())
    }

    @Test func aToolsCallsPerRunAndTimeAreLimited() async throws {
        let executor = ExecutorAgent()
        let tools = try ToolRegistry(
            [CountingTool(), Sleeper()],
            policy: ToolPolicy(limits: ["echo": ToolLimits(maxCallsPerRun: 2), "sleeper": ToolLimits(timeoutSeconds: 0.2)]))
        #expect(!(await executor.run(Self.echo, allowed: [], tools: tools, context: context, earlierCalls: 1)).isError)
        let over = await executor.run(Self.echo, allowed: [], tools: tools, context: context, earlierCalls: 2)
        #expect(over.isError && over.content.contains("at most 2 times in a run"))

        let started = ContinuousClock.now
        let slow = await executor.run(ToolCall(id: "c2", name: "sleeper", arguments: "{}"), allowed: [], tools: tools, context: context)
        #expect(slow.isError && slow.content.contains("took longer than its limit of 0.2 s"))
        #expect(started.duration(to: .now) < .seconds(5))
    }

    /// In a run, the count of earlier calls comes from the journal: the third call of a tool
    /// limited to two is refused, and the model reads why.
    @Test func theLimitHoldsAcrossARunsSteps() async throws {
        let echo = CountingTool()
        let call = ChatResponse.toolCalls([("echo", #"{"text":"x"}"#)])
        let model = ScriptedModel([
            .response(
                ChatResponse.text(#"{"steps":[{"id":"s1","title":"Echo","instruction":"Echo thrice.","tools":["echo"],"dependsOn":[]}]}"#)),
            .response(call), .response(call), .response(call), .response(ChatResponse.text("done")),
        ])
        let store = InMemoryRunStore()
        let driver = RunDriver(
            store: store, model: model,
            tools: try ToolRegistry([echo], policy: ToolPolicy(limits: ["echo": ToolLimits(maxCallsPerRun: 2)])))
        let final = try await driver.run(goal: "Echo", configuration: RunConfiguration(model: "m", tools: []))
        #expect(final.status == .succeeded)
        #expect(echo.count == 2)
        let last = model.requests.last?.messages.last
        #expect(last?.content?.contains("at most 2 times in a run") == true)
    }

    @Test func thePolicyIsASetting() async throws {
        try await withTemporaryDirectory { directory in
            let yaml = """
                tools:
                  allow: ["fs_*", shell_run]
                  deny: [fs_write]
                  requireApproval: [shell_run]
                  limits:
                    shell_run: {maxCallsPerRun: 3, timeout: 20}
                    "fs_*": {maxCallsPerRun: 100}
                """
            try yaml.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
            let settings = try await TroupeSettings.load(
                overrides: ["tools.limits.web_fetch.timeout=5"], environment: [:], directory: directory)
            #expect(
                settings.toolPolicy
                    == ToolPolicy(
                        allow: ["fs_*", "shell_run"], deny: ["fs_write"], requireApproval: ["shell_run"],
                        limits: [
                            "shell_run": ToolLimits(maxCallsPerRun: 3, timeoutSeconds: 20), "fs_*": ToolLimits(maxCallsPerRun: 100),
                            "web_fetch": ToolLimits(timeoutSeconds: 5),
                        ]))
            await #expect(throws: TroupeError.self) {
                _ = try await TroupeSettings.load(overrides: ["tools.limits.x.retries=1"], environment: [:], directory: directory)
            }
        }
    }
}
