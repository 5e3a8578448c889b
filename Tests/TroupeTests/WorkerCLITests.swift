import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import Troupe
import TroupeTesting

/// `troupe submit` and `troupe worker` as users run them: separate processes over one store.
@Suite(.serialized) struct WorkerCLITests {
    private func effectCount(_ workspace: String) -> Int {
        let text = (try? String(contentsOfFile: workspace + "/effects.log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").count
    }

    private func submit(_ mock: MockOpenAIServer, workspace: String, store: String, directory: String) async throws -> RunID {
        let submitted = try await CLIProcess.runApart(
            [
                "submit", "Record two side effects", "--base-url", mock.baseURL, "--model", "mock", "--workspace", workspace,
                "--store", store,
            ], directory: directory)
        #expect(submitted.status == 0, "\(submitted.output)\(submitted.errors)")
        #expect(submitted.errors.contains("waiting for a worker"))
        return RunID(submitted.output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test func aWorkerDrainsOnSIGTERMAndAnotherFinishesTheRunWithoutRepeatingACall() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = directory + "/workspace"
            try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
            let store = "sqlite:\(directory)/runs.db"
            let worker = ["worker", "--store", store, "--set", "worker.pollInterval=0.1"]
            try await MockOpenAIServer.withServer(configuration: CrashResumeTests.mockConfiguration(latency: .milliseconds(300))) { mock in
                let id = try await submit(mock, workspace: workspace, store: store, directory: directory)
                let first = try CLIProcess(worker, directory: directory, separateErrors: true)
                defer { if first.process.isRunning { first.kill(SIGKILL) } }
                // Request 4 is step s2's first model call: s1 is complete, s2 is in flight.
                try await first.waitUntil("the 4th model request") { mock.requestCount >= 4 }
                first.kill(SIGTERM)
                #expect(await first.wait() == 0, "worker log:\n\(first.errorOutput)")
                #expect(first.errorOutput.contains("draining"))
                #expect(first.errorOutput.contains("1 handed back"), "\(first.errorOutput)")
                let handedBack = try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                    (try await store.requireRun(id), try await store.lease(of: id))
                }
                #expect(handedBack.0.status == .running)
                #expect(handedBack.1 == nil)
                // The call in flight at the signal finished and was journaled: the next worker
                // goes on from there.
                let second = try CLIProcess(worker, directory: directory, separateErrors: true)
                defer { if second.process.isRunning { second.kill(SIGKILL) } }
                try await eventually("the run succeeded") {
                    try await SQLiteRunStore.withStore(path: directory + "/runs.db") { try await $0.requireRun(id).status } == .succeeded
                }
                second.kill(SIGTERM)
                #expect(await second.wait() == 0, "worker log:\n\(second.errorOutput)")
                #expect(second.errorOutput.contains("1 claimed, 1 finished"), "\(second.errorOutput)")
                // 1 plan + 3 steps × 2 turns: nothing asked twice, no side effect repeated.
                #expect(mock.requestCount == 7)
                #expect(effectCount(workspace) == 2)
            }
        }
    }

    @Test func submitFollowPrintsTheProgressAWorkerMakesAndExitsAsRunWould() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = directory + "/workspace"
            try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
            let store = "sqlite:\(directory)/runs.db"
            try await MockOpenAIServer.withServer(configuration: CrashResumeTests.mockConfiguration(latency: .zero)) { mock in
                let worker = try CLIProcess(
                    ["worker", "--store", store, "--set", "worker.pollInterval=0.1"], directory: directory, separateErrors: true)
                defer { if worker.process.isRunning { worker.kill(SIGKILL) } }
                let followed = try await CLIProcess.runApart(
                    [
                        "submit", "Record two side effects", "--base-url", mock.baseURL, "--model", "mock", "--workspace",
                        workspace, "--store", store, "--follow",
                    ], directory: directory)
                worker.kill(SIGTERM)
                #expect(await worker.wait() == 0)
                #expect(followed.status == 0, "\(followed.output)\(followed.errors)")
                #expect(followed.output.contains("▸ plan: 3 steps"))
                #expect(followed.output.contains("Answer:"))
                #expect(effectCount(workspace) == 2)
            }
        }
    }

    @Test func aSecondSignalStopsTheWorkerAtOnce() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = directory + "/workspace"
            try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
            let store = "sqlite:\(directory)/runs.db"
            try await MockOpenAIServer.withServer(configuration: CrashResumeTests.mockConfiguration(latency: .zero)) { mock in
                mock.enqueue(.hang)
                _ = try await submit(mock, workspace: workspace, store: store, directory: directory)
                let worker = try CLIProcess(["worker", "--store", store], directory: directory, separateErrors: true)
                defer { if worker.process.isRunning { worker.kill(SIGKILL) } }
                try await worker.waitUntil("the planner's request") { mock.requestCount >= 1 }
                worker.kill(SIGTERM)
                try await worker.waitUntil("the drain began") { worker.errorOutput.contains("draining") }
                worker.kill(SIGTERM)
                #expect(await worker.wait() == 130)
                #expect(worker.errorOutput.contains("stopping at once"))
            }
        }
    }

    /// A server whose API cannot start (its port is taken) exits with an error, and hands back
    /// any run its worker claimed meanwhile instead of leaving it leased.
    @Test func serveWhoseAPICannotStartLeavesNoRunLeased() async throws {
        try await withTemporaryDirectory { directory in
            try await MockOpenAIServer.withServer(configuration: CrashResumeTests.mockConfiguration(latency: .milliseconds(300))) { mock in
                let common = [
                    "--set", "model.baseURL=\(mock.baseURL)", "--set", "model.name=mock", "--set",
                    "server.workspaceRoot=\(directory)/workspaces",
                ]
                let first = try CLIProcess(
                    ["serve", "--port", "0", "--workers", "0", "--insecure-no-auth", "--store", "sqlite:\(directory)/first.db"] + common,
                    directory: directory,
                    separateErrors: true)
                defer { if first.process.isRunning { first.kill(SIGKILL) } }
                try await first.waitUntil("the first server listens") { first.errorOutput.contains("listening on http://127.0.0.1:") }
                let log = first.errorOutput
                let address = try #require(log.range(of: "listening on http://127.0.0.1:"))
                let port = try #require(Int(log[address.upperBound...].prefix { $0.isNumber }), "\(log)")

                try FileManager.default.createDirectory(atPath: directory + "/ws", withIntermediateDirectories: true)
                let id = RunID.make()
                try await SQLiteRunStore.withStore(path: directory + "/second.db") { store in
                    _ = try await store.createRun(
                        id: id, goal: "Record two side effects",
                        configuration: RunConfiguration(model: "mock", baseURL: mock.baseURL, workspace: directory + "/ws"), at: Date())
                }
                let second = try CLIProcess(
                    ["serve", "--port", "\(port)", "--insecure-no-auth", "--store", "sqlite:\(directory)/second.db"] + common,
                    directory: directory,
                    separateErrors: true)
                defer { if second.process.isRunning { second.kill(SIGKILL) } }
                #expect(await second.wait() == 6, "serve log:\n\(second.errorOutput)")
                #expect(second.errorOutput.contains("Cannot listen on 127.0.0.1:\(port)"), "serve log:\n\(second.errorOutput)")
                let lease = try await SQLiteRunStore.withStore(path: directory + "/second.db") { try await $0.lease(of: id) }
                #expect(lease == nil, "serve log:\n\(second.errorOutput)")
                first.kill(SIGTERM)
                #expect(await first.wait() == 0)
            }
        }
    }

    @Test func serveDrainsOnSIGTERMWithARunInFlightAndAWorkerFinishesIt() async throws {
        try await withTemporaryDirectory { directory in
            let store = "sqlite:\(directory)/runs.db"
            try await MockOpenAIServer.withServer(configuration: CrashResumeTests.mockConfiguration(latency: .milliseconds(300))) { mock in
                let settings = [
                    "--store", store, "--set", "model.baseURL=\(mock.baseURL)", "--set", "model.name=mock", "--set",
                    "server.workspaceRoot=\(directory)/workspaces", "--set", "worker.pollInterval=0.1",
                ]
                let serve = try CLIProcess(
                    ["serve", "--port", "0", "--insecure-no-auth"] + settings, directory: directory, separateErrors: true)
                defer { if serve.process.isRunning { serve.kill(SIGKILL) } }
                try await serve.waitUntil("the server listens") { serve.errorOutput.contains("listening on http://127.0.0.1:") }
                let log = serve.errorOutput
                let address = try #require(log.range(of: "listening on http://127.0.0.1:"))
                let port = try #require(Int(log[address.upperBound...].prefix { $0.isNumber }), "\(log)")
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/runs")
                request.method = .POST
                request.headers.add(name: "content-type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: #"{"goal": "Record two side effects"}"#))
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                #expect(response.status.code == 201)
                let created = try JSONValue.parse(String(buffer: try await response.body.collect(upTo: 1 << 20)))
                let id = RunID(try #require(created["id"]?.stringValue))
                try await serve.waitUntil("step s2 in flight") { mock.requestCount >= 4 }
                serve.kill(SIGTERM)
                #expect(await serve.wait() == 0, "serve log:\n\(serve.errorOutput)")
                #expect(serve.errorOutput.contains("draining"))
                let handedBack = try await SQLiteRunStore.withStore(path: directory + "/runs.db") { store in
                    (try await store.requireRun(id).status, try await store.lease(of: id))
                }
                #expect(handedBack.0 == .running)
                #expect(handedBack.1 == nil)
                let worker = try CLIProcess(["worker"] + settings, directory: directory, separateErrors: true)
                defer { if worker.process.isRunning { worker.kill(SIGKILL) } }
                try await eventually("the run succeeded") {
                    try await SQLiteRunStore.withStore(path: directory + "/runs.db") { try await $0.requireRun(id).status } == .succeeded
                }
                worker.kill(SIGTERM)
                #expect(await worker.wait() == 0)
                #expect(mock.requestCount == 7)
                let effects = (try? String(contentsOfFile: "\(directory)/workspaces/\(id)/effects.log", encoding: .utf8)) ?? ""
                #expect(effects.split(separator: "\n").count == 2)
            }
        }
    }

    @Test func theCLIWorksThroughAServerWithTheSameOutputAndExitCodes() async throws {
        try await withTemporaryDirectory { directory in
            let store = "sqlite:\(directory)/runs.db"
            try await MockOpenAIServer.withServer(configuration: CrashResumeTests.mockConfiguration(latency: .zero)) { mock in
                let serving = [
                    "serve", "--port", "0", "--store", store, "--set", "model.baseURL=\(mock.baseURL)", "--set", "model.name=mock",
                    "--set", "server.workspaceRoot=\(directory)/workspaces",
                ]
                // No key in the store yet: the server refuses to start, and says how to make one.
                let keyless = try await CLIProcess.runApart(serving, directory: directory)
                #expect(keyless.status == 6, "\(keyless.errors)")
                #expect(keyless.errors.contains("troupe keys create --tenant NAME --role admin --store sqlite:"), "\(keyless.errors)")
                let made = try await CLIProcess.runApart(
                    ["keys", "create", "--tenant", "acme", "--role", "operator", "--name", "cli", "--store", store], directory: directory)
                #expect(made.status == 0, "\(made.errors)")
                let key = try #require(made.output.split(separator: "\n").last.map(String.init))
                #expect(key.hasPrefix("trp_") && key.count == 56)

                let serve = try CLIProcess(serving, directory: directory, separateErrors: true)
                defer { if serve.process.isRunning { serve.kill(SIGKILL) } }
                try await serve.waitUntil("the server listens") { serve.errorOutput.contains("listening on http://127.0.0.1:") }
                let log = serve.errorOutput
                let address = try #require(log.range(of: "listening on http://127.0.0.1:"))
                let server = "http://127.0.0.1:" + log[address.upperBound...].prefix { $0.isNumber }
                let withKey = ["TROUPE_API_KEY": key]

                let anonymous = try await CLIProcess.runApart(["runs", "--server", server], directory: directory)
                #expect(anonymous.status != 0 && anonymous.errors.contains("Set TROUPE_API_KEY"), "\(anonymous.errors)")
                let submitted = try await CLIProcess.runApart(
                    ["submit", "Record two side effects", "--follow", "--server", server], directory: directory, environment: withKey)
                #expect(submitted.status == 0, "\(submitted.output)\(submitted.errors)")
                #expect(submitted.output.contains("▸ plan: 3 steps"))
                #expect(submitted.output.contains("Answer:"))

                let listed = try await CLIProcess.runApart(
                    ["runs", "--json"], directory: directory, environment: ["TROUPE_SERVER": server, "TROUPE_API_KEY": key])
                let runs = try JSONValue.parse(listed.output).arrayValue ?? []
                #expect(runs.count == 1 && runs.first?["status"] == "succeeded", "\(listed.output)\(listed.errors)")
                #expect(runs.first?["tenant"] == "acme")
                let id = try #require(runs.first?["id"]?.stringValue)
                let local = try await CLIProcess.runApart(["show", id, "--json", "--store", store], directory: directory)
                let remote = try await CLIProcess.runApart(
                    ["show", id, "--json", "--server", server], directory: directory, environment: withKey)
                #expect(remote.status == 0)
                #expect(remote.output == local.output)
                let human = try await CLIProcess.runApart(["show", id, "--server", server], directory: directory, environment: withKey)
                #expect(human.output == (try await CLIProcess.runApart(["show", id, "--store", store], directory: directory)).output)

                let missing = try await CLIProcess.runApart(
                    ["show", "nope", "--server", server], directory: directory, environment: withKey)
                #expect(missing.status == 5, "\(missing.errors)")
                let cancelled = try await CLIProcess.runApart(
                    ["cancel", id, "--server", server], directory: directory, environment: withKey)
                #expect(cancelled.output.contains("already succeeded"))
                let resumed = try await CLIProcess.runApart(["resume", id, "--server", server], directory: directory, environment: withKey)
                #expect(resumed.status == 0, "\(resumed.output)\(resumed.errors)")
                #expect(resumed.output.contains("already succeeded"))
                let moved = try await CLIProcess.runApart(
                    ["resume", id, "--workspace", "/tmp", "--server", server], directory: directory, environment: withKey)
                #expect(moved.status == 6)
                let refused = try await CLIProcess.runApart(
                    ["submit", "x", "--workspace", "/etc", "--server", server], directory: directory, environment: withKey)
                #expect(refused.status == 6)

                // Revoked, the key opens nothing more; the listing shows it revoked and never shows the key.
                let keyID = try #require(made.output.range(of: "key_").map { String(made.output[$0.lowerBound...].prefix(16)) })
                #expect(try await CLIProcess.runApart(["keys", "revoke", keyID, "--store", store], directory: directory).status == 0)
                let after = try await CLIProcess.runApart(["runs", "--server", server], directory: directory, environment: withKey)
                #expect(after.status != 0 && after.errors.contains("not valid"), "\(after.errors)")
                let keys = try await CLIProcess.runApart(["keys", "list", "--json", "--store", store], directory: directory)
                #expect(!keys.output.contains(key) && keys.output.contains("\"active\" : false"), "\(keys.output)")
                serve.kill(SIGTERM)
                #expect(await serve.wait() == 0)
                let unreachable = try await CLIProcess.runApart(["runs", "--server", server], directory: directory)
                #expect(unreachable.status == 7, "\(unreachable.errors)")
            }
        }
    }

    @Test func workerRefusesAConcurrencyOutOfRange() async throws {
        try await withTemporaryDirectory { directory in
            let result = try await CLIProcess.run(
                ["worker", "--concurrency", "0", "--store", "sqlite:\(directory)/r.db"], directory: directory)
            #expect(result.status == 64)
            #expect(result.output.contains("--concurrency must be between 1 and 1000"))
        }
    }
}
