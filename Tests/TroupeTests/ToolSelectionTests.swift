import Testing
import Troupe

@Suite struct ToolSelectionTests {
    @Test func entriesAreGroupsOrSingleTools() throws {
        #expect(try ToolSelection("fs") == .group("fs"))
        #expect(try ToolSelection("fs_read") == .tool("fs_read", group: "fs"))
        #expect(try ToolSelection("shell_run") == .tool("shell_run", group: "shell"))
        #expect(try ToolSelection("mcp") == .allMCPServers)
        #expect(try ToolSelection("mcp:time") == .mcpServer("time"))
        #expect(try ToolSelection("mcp:time/get_current_time") == .mcpTool(server: "time", tool: "get_current_time"))
        for entry in ["mcp:time/get_current_time", "fs_read", "mcp:x", "web"] {
            #expect(try ToolSelection(entry).description == entry)
        }
        for bad in ["", "teleport", "mcp:", "mcp:/tool", "mcp:server/", "FS", "fs_read ", "mcp:../x", "mcp:a/b/c", "mcp:a b"] {
            #expect(throws: TroupeError.self, "\(bad)") { try ToolSelection(bad) }
        }
    }

    @Test func anAllowlistCoversWhatItsGroupsHold() throws {
        let allowed = try ToolSelection.parse(["fs", "web_fetch", "mcp:time"])
        for entry in ["fs", "fs_read", "fs_patch", "web_fetch", "mcp:time", "mcp:time/now"] {
            #expect(try ToolSelection(entry).isAllowed(by: allowed), "\(entry)")
        }
        for entry in ["web", "shell", "shell_run", "mcp", "mcp:other", "mcp:other/now"] {
            #expect(try !ToolSelection(entry).isAllowed(by: allowed), "\(entry)")
        }
        #expect(try ToolSelection("mcp:any/tool").isAllowed(by: [.allMCPServers]))
        #expect(try !ToolSelection("fs_read").isAllowed(by: []))
    }

    /// The catalogue of single built-in tools names what each group really holds.
    @Test func theCatalogueMatchesTheTools() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            #expect(ToolSelection.builtInGroups["fs"] == FileTools.all(workspace: workspace).map(\.name))
            #expect(ToolSelection.builtInGroups["shell"] == [ShellTool(workspace: workspace).name])
            #expect(ToolSelection.builtInGroups["web"] == [WebFetchTool().name])
        }
    }
}
