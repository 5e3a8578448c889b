import Foundation
import Synchronization
import Testing
import Troupe
import TroupeTesting

/// Issue 16's probes through whole runs: `troupe run --tools shell` against the mock model, whose
/// plan has one step per probe and whose executor aims `shell_run` at it. With the default
/// sandbox nothing gets out; with `tools.shell.sandbox: none` the same probes do what
/// docs/TOOLS.md says, so the sandbox is what stops them.
@Suite(.enabled(if: access("/usr/bin/bwrap", X_OK) == 0, "needs bubblewrap: ./scripts/test installs it"))
struct SandboxRunProbeTests {
    /// A probe: a name and the command the model sends.
    struct Probe {
        var name: String
        var command: [String]
    }

    /// The places the probes aim at, around a run's workspace.
    struct Scene {
        var directory: String
        var workspace: String { directory + "/ws" }
        var outside: String { directory + "/outside" }
        var store: String { directory + "/runs.db" }
        let sleepSeconds = "317.\(Int.random(in: 100...999))"

        func probes(canaryPort: Int) -> [Probe] {
            [
                Probe(name: "shadow", command: ["cat", "/etc/shadow"]),
                Probe(name: "root", command: ["ls", "-a", "/root"]),
                Probe(name: "homes", command: ["ls", "/home"]),
                Probe(name: "store", command: ["cat", store]),
                Probe(name: "write", command: ["touch", outside + "/direct"]),
                Probe(name: "env", command: ["env", "touch", outside + "/through-env"]),
                Probe(name: "find", command: ["find", ".", "-maxdepth", "0", "-exec", "touch", outside + "/through-find", ";"]),
                Probe(name: "symlink", command: ["touch", "link/through-link"]),
                Probe(name: "tmp", command: ["touch", "/tmp/troupe-probe-\(sleepSeconds)"]),
                Probe(
                    name: "canary",
                    command: [
                        "python3", "-c", "import socket; socket.create_connection(('127.0.0.1', \(canaryPort)), 3); print('reached')",
                    ]),
                Probe(name: "bomb", command: ["sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 1; echo survived"]),
                Probe(name: "filler", command: ["sh", "-c", "head -c 10737418240 /dev/zero > big; echo status $?"]),
                Probe(
                    name: "daemon",
                    command: [
                        "sh", "-c",
                        "(setsid sleep \(sleepSeconds) > /dev/null 2>&1 &); sleep 0.2; pgrep -x sleep > /dev/null && echo started",
                    ]),
            ]
        }

        /// Runs the probes in one `troupe run` with these settings; returns each probe's tool output.
        func run(_ probes: [Probe], settings: [String]) async throws -> [String: ToolOutput] {
            let next = Atomic(0)
            let configuration = MockOpenAIServer.Configuration(planSteps: probes.count, planTools: ["shell_run"]) { tool, _ in
                guard tool == "shell_run" else { return nil }
                let index = next.add(1, ordering: .relaxed).oldValue
                return ["command": .array(probes[index % probes.count].command.map(JSONValue.string)), "timeoutSeconds": 60]
            }
            let runID = try await MockOpenAIServer.withServer(configuration: configuration) { mock in
                let run = try await CLIProcess.run(
                    [
                        "run", "Probe the sandbox", "--tools", "shell", "--workspace", "ws", "--base-url", mock.baseURL, "--store",
                        "sqlite:\(store)", "--set", "run.maxConcurrency=1", "--set", "run.maxSteps=20",
                    ] + settings.flatMap { ["--set", $0] },
                    directory: directory)
                #expect(run.status == 0, "\(run.output)")
                return try #require(run.output.firstMatch(of: /run_[A-Za-z0-9]+/).map { String($0.output) }, "\(run.output)")
            }
            let outputs = try await SQLiteRunStore.withStore(path: store) { store in
                try await MCPFixtures.toolOutputs(of: RunID(runID), in: store)
            }
            #expect(outputs.count == probes.count)
            return Dictionary(uniqueKeysWithValues: zip(probes.map(\.name), outputs))
        }

        /// A fresh scene: the workspace with a link pointing out, a folder outside, a store.
        static func make(in directory: String) throws -> Scene {
            let scene = Scene(directory: directory)
            for folder in [scene.workspace, scene.outside] {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            }
            try FileManager.default.createSymbolicLink(atPath: scene.workspace + "/link", withDestinationPath: scene.outside)
            return scene
        }

        func isDaemonGone() -> Bool {
            let all = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return !all.contains { pid in
                ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").contains(sleepSeconds)
            }
        }
    }

    static let programs = "tools.shell.allowedPrograms=cat,ls,touch,env,find,python3,sh,head"

    @Test func inTheSandboxNothingGetsOut() async throws {
        try await LocalWebServer.withServer({ _ in LocalWebServer.Reply(body: "canary") }) { canary in
            try await withTemporaryDirectory { directory in
                let scene = try Scene.make(in: directory)
                let outputs = try await scene.run(
                    scene.probes(canaryPort: canary.port),
                    settings: [Self.programs, "tools.shell.maxProcesses=64", "tools.shell.maxFileBytes=1048576"])
                func failed(_ name: String) -> Bool { outputs[name]?.isError == true }
                for name in ["shadow", "root", "homes", "store", "write", "env", "find", "symlink"] {
                    #expect(failed(name), "\(name): \(outputs[name]?.content ?? "no output")")
                }
                #expect(outputs["store"]?.content.contains("SQLite") == false)
                #expect(try FileManager.default.contentsOfDirectory(atPath: scene.outside).isEmpty, "nothing written outside")
                #expect(!FileManager.default.fileExists(atPath: "/tmp/troupe-probe-\(scene.sleepSeconds)"), "/tmp is private")
                let canaryOutput = outputs["canary"]?.content ?? ""
                #expect(!canaryOutput.contains("reached") && canaryOutput.contains("ConnectionRefused"), "\(canaryOutput)")
                let bomb = outputs["bomb"]?.content ?? ""
                #expect(bomb.contains("fork") && !bomb.contains("timed out"), "stopped by the limit: \(bomb.prefix(300))")
                #expect(outputs["filler"]?.content.contains("status 153") == true, "SIGXFSZ: \(outputs["filler"]?.content ?? "")")
                let size = try FileManager.default.attributesOfItem(atPath: scene.workspace + "/big")[.size] as? Int
                #expect(size == 1 << 20)
                #expect(outputs["daemon"]?.content.contains("started") == true)
                try await eventually("the double-forked sleep is gone") { scene.isDaemonGone() }
            }
        }
    }

    /// The canary is reached with `tools.shell.network: true`, and only then.
    @Test func theNetworkIsThereWhenAllowed() async throws {
        try await LocalWebServer.withServer({ _ in LocalWebServer.Reply(body: "canary") }) { canary in
            try await withTemporaryDirectory { directory in
                let scene = try Scene.make(in: directory)
                let probe = scene.probes(canaryPort: canary.port).filter { $0.name == "canary" }
                let outputs = try await scene.run(probe, settings: [Self.programs, "tools.shell.network=true"])
                #expect(outputs["canary"]?.content.contains("reached") == true, "\(outputs["canary"]?.content ?? "")")
            }
        }
    }

    /// Without the sandbox: files outside the workspace are read and written (the user's own
    /// rights), and only programs that start others (`env`, `sh`, `python3`) and `find -exec`
    /// are refused — what docs/TOOLS.md says.
    @Test func withoutTheSandboxTheProbesDoWhatTheDocsSay() async throws {
        try await LocalWebServer.withServer({ _ in LocalWebServer.Reply(body: "canary") }) { canary in
            try await withTemporaryDirectory { directory in
                let scene = try Scene.make(in: directory)
                let harmless = scene.probes(canaryPort: canary.port).filter {
                    ["store", "write", "env", "find", "symlink", "canary", "bomb", "filler", "daemon"].contains($0.name)
                }
                let outputs = try await scene.run(harmless, settings: [Self.programs, "tools.shell.sandbox=none"])
                #expect(outputs["store"]?.content.contains("SQLite format") == true, "the store is readable")
                #expect(FileManager.default.fileExists(atPath: scene.outside + "/direct"))
                #expect(FileManager.default.fileExists(atPath: scene.outside + "/through-link"))
                for name in ["env", "canary", "bomb", "filler", "daemon"] {
                    #expect(outputs[name]?.content.contains("starts other programs") == true, "\(name): \(outputs[name]?.content ?? "")")
                }
                #expect(outputs["find"]?.content.contains("is refused") == true)
                #expect(!FileManager.default.fileExists(atPath: scene.outside + "/through-env"))
                #expect(!FileManager.default.fileExists(atPath: scene.outside + "/through-find"))
            }
        }
    }
}
