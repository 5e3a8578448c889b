import Foundation
import Testing
import Troupe
import TroupeSettings

/// The sandbox's settings: `tools.shell.sandbox`/`network` as journaled and resumed elsewhere,
/// and `mcp.servers.NAME.sandbox` with its paths.
@Suite struct SandboxSettingsTests {
    private static func settings(_ overrides: [String]) async throws -> TroupeSettings {
        try await TroupeSettings.load(overrides: overrides, environment: [:], directory: "/srv/project", readingImplicitFile: false)
    }

    /// The shell policy a run journaled under `started` gets when resumed under `host`.
    private static func resumed(started: [String], host: [String]) async throws -> ShellPolicy {
        let rules = ToolRules(try await settings(started), toolGroups: ["shell"])
        return try rules.applied(to: try await settings(host), toolGroups: ["shell"]).settings.shellPolicy
    }

    /// A run started without a sandbox (a laptop) is not resumed without one on a worker that
    /// sandboxes; one started with a sandbox keeps it on a host that says `none`; the network is
    /// open only where both allow it.
    @Test func theStricterOfTheJournaledAndTheHostsSandboxHolds() async throws {
        let none = "tools.shell.sandbox=none"
        #expect(try await Self.resumed(started: [none], host: []).sandboxMode == .auto)
        #expect(try await Self.resumed(started: [none], host: ["tools.shell.sandbox=bwrap"]).sandboxMode == .bwrap)
        #expect(try await Self.resumed(started: [], host: [none]).sandboxMode == .auto)
        #expect(try await Self.resumed(started: [none], host: [none]).sandboxMode == SandboxMode.none)
        let open = "tools.shell.network=true"
        #expect(try await Self.resumed(started: [open], host: []).network == false)
        #expect(try await Self.resumed(started: [], host: [open]).network == false)
        #expect(try await Self.resumed(started: [open], host: [open]).network == true)
    }

    /// The limits of each sandboxed command are settings, journaled with the run: a resume
    /// elsewhere keeps them (or the host's, where lower), and the sandbox found gets them.
    @Test func theShellsResourceLimitsAreSettingsKeptOnResume() async throws {
        let started = [
            "tools.shell.maxProcesses=64", "tools.shell.maxFileBytes=1048576", "tools.shell.maxMemoryBytes=1073741824",
            "tools.shell.maxOpenFiles=256",
        ]
        let expected = Sandbox.ResourceLimits(fileBytes: 1 << 20, addressSpaceBytes: 1 << 30, openFiles: 256, processes: 64)
        #expect(try await Self.settings(started).shellPolicy.limits == expected)
        #expect(try await Self.resumed(started: started, host: []).limits == expected)
        #expect(try await Self.resumed(started: [], host: started).limits == expected, "the host's lower limits hold")
        #expect(
            try await Self.resumed(started: ["tools.shell.maxProcesses=100"], host: ["tools.shell.maxProcesses=200"]).limits.processes
                == 100)
        var policy = try await Self.settings(started).shellPolicy
        policy.sandboxMode = .none
        #expect(try await policy.withSandbox().sandbox == nil)
        if access("/usr/bin/bwrap", X_OK) == 0 {
            policy.sandboxMode = .auto
            #expect(try await policy.withSandbox().sandbox?.limits == expected)
        }
        for bad in ["tools.shell.maxProcesses=2", "tools.shell.maxMemoryBytes=1000", "tools.shell.maxOpenFiles=x"] {
            await #expect(throws: TroupeError.self, "\(bad)") { _ = try await Self.settings([bad]) }
        }
    }

    @Test func anMCPServersSandboxIsReadWithItsPaths() async throws {
        let settings = try await Self.settings([
            "mcp.servers.notes.command=python3", "mcp.servers.notes.sandbox=true", "mcp.servers.notes.network=true",
            "mcp.servers.notes.readOnlyPaths=venv,/opt/python", "mcp.servers.notes.writablePaths=~/notes-data",
            "mcp.servers.plain.command=python3",
        ])
        let notes = try #require(settings.mcpServers.first { $0.name == "notes" })
        let sandbox = try #require(notes.sandbox)
        #expect(sandbox.network && sandbox.readOnlyPaths == ["/srv/project/venv", "/opt/python"])
        #expect(
            sandbox.writablePaths.count == 1 && sandbox.writablePaths[0].hasSuffix("/notes-data") && sandbox.writablePaths[0].hasPrefix("/")
        )
        #expect(settings.mcpServers.first { $0.name == "plain" }?.sandbox == nil)
    }

    @Test func sandboxPathsWithoutASandboxOrForAURLAreRefused() async throws {
        for (overrides, message) in [
            (["mcp.servers.x.command=a", "mcp.servers.x.network=true"], "set sandbox: true"),
            (["mcp.servers.x.command=a", "mcp.servers.x.readOnlyPaths=/opt"], "set sandbox: true"),
            (["mcp.servers.x.url=http://127.0.0.1:9/mcp", "mcp.servers.x.sandbox=true"], "not for a url"),
            (["mcp.servers.x.command=a", "mcp.servers.x.sandbox=maybe"], "mcp.servers.x.sandbox"),
            (["mcp.servers.x.command=a", "mcp.servers.x.sandbox=true", "mcp.servers.x.cwd=/"], "may not see '/'"),
            (["mcp.servers.x.command=a", "mcp.servers.x.sandbox=true", "mcp.servers.x.readOnlyPaths=/home"], "may not see '/home'"),
            (["mcp.servers.x.command=a", "mcp.servers.x.sandbox=true", "mcp.servers.x.readOnlyPaths=/run/user"], "may not see"),
            (["mcp.servers.x.command=a", "mcp.servers.x.sandbox=true", "mcp.servers.x.writablePaths=/usr/local/bin"], "may not write"),
        ] {
            do {
                _ = try await Self.settings(overrides)
                Issue.record("\(overrides) was accepted")
            } catch let error as TroupeError {
                #expect(error.code == .configuration && error.message.contains(message), "\(error.message)")
            }
        }
    }

    /// A server's sandbox is part of what it is: a run started with a sandboxed server is not
    /// resumed with the same server unsandboxed (or with other paths). A server without one
    /// keeps the fingerprint runs journaled before sandboxes carry.
    @Test func aServersSandboxIsPartOfItsFingerprint() async throws {
        let base = ["mcp.servers.s.command=python3"]
        let plainSettings = try await Self.settings(base)
        let plain = ToolRules(plainSettings, toolGroups: ["mcp:s"])
        let sandboxed = ToolRules(try await Self.settings(base + ["mcp.servers.s.sandbox=true"]), toolGroups: ["mcp:s"])
        let wider = ToolRules(
            try await Self.settings(base + ["mcp.servers.s.sandbox=true", "mcp.servers.s.writablePaths=/data"]), toolGroups: ["mcp:s"])
        #expect(Set([plain.mcpServers["s"], sandboxed.mcpServers["s"], wider.mcpServers["s"]]).count == 3)
        #expect(
            plain.mcpServers["s"] == "sha256:"
                + SHA256.hex(
                    JSONValue.object([
                        "readOnlyTools": [], "idempotentTools": [], "templates": [:], "command": "python3", "arguments": [],
                        "variables": [], "workingDirectory": .string(FileManager.default.currentDirectoryPath),
                    ]).jsonString), "the definition hashed as before sandboxes")
        #expect(throws: TroupeError.self) { try sandboxed.applied(to: plainSettings, toolGroups: ["mcp:s"]) }
    }
}
