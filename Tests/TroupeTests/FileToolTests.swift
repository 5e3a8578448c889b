import Foundation
import Testing
import Troupe

@Suite struct FileToolTests {
    func context(_ workspace: Workspace) -> ToolContext {
        ToolContext(runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: workspace.root, logger: .init(label: "t"))
    }

    @Test func hostilePathsAreRefused() async throws {
        try await withTemporaryDirectory { directory in
            let root = directory + "/ws"
            try FileManager.default.createDirectory(atPath: root + "/inside", withIntermediateDirectories: true)
            try "secret".write(toFile: directory + "/secret.txt", atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: root + "/escape", withDestinationPath: directory)
            try FileManager.default.createSymbolicLink(atPath: root + "/inside/link.txt", withDestinationPath: directory + "/secret.txt")
            let workspace = try Workspace(root)
            for path in [
                "../secret.txt", "/etc/passwd", directory + "/secret.txt", "escape/secret.txt", "inside/link.txt", "a\0b",
                "inside/../../secret.txt", String(repeating: "a", count: 300),
            ] {
                #expect(throws: TroupeError.self, "\(path) must be refused") { _ = try workspace.resolve(path) }
            }
            #expect(try workspace.resolve("inside/new/file.txt") == workspace.root + "/inside/new/file.txt")
            #expect(try workspace.resolve(".") == workspace.root)

            let read = ReadFileTool(workspace: workspace)
            let error = await #expect(throws: TroupeError.self) {
                _ = try await read.call(["path": "escape/secret.txt"], context: context(workspace))
            }
            #expect(error?.code == .accessDenied)
        }
    }

    @Test func writeReadListAndAppend() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            let tools = try ToolRegistry(FileTools.all(workspace: workspace))
            let ctx = context(workspace)
            _ = try await tools.tool(named: "fs_write")?.call(["path": "notes/a.txt", "content": "one\ntwo\nthree"], context: ctx)
            let whole = try await tools.tool(named: "fs_read")?.call(["path": "notes/a.txt"], context: ctx)
            #expect(whole?.content == "one\ntwo\nthree")
            let part = try await tools.tool(named: "fs_read")?.call(["path": "notes/a.txt", "startLine": 2, "lineCount": 1], context: ctx)
            #expect(part?.content == "two")
            _ = try await tools.tool(named: "fs_append")?.call(["path": "log.txt", "content": "x\n"], context: ctx)
            _ = try await tools.tool(named: "fs_append")?.call(["path": "log.txt", "content": "y\n"], context: ctx)
            #expect(try String(contentsOfFile: directory + "/log.txt", encoding: .utf8) == "x\ny\n")
            let listing = try await tools.tool(named: "fs_list")?.call(["path": ".", "recursive": true], context: ctx)
            #expect(listing?.content == "log.txt (4 bytes)\nnotes/\nnotes/a.txt (13 bytes)")
            let missing = try await tools.tool(named: "fs_read")?.call(["path": "nope.txt"], context: ctx)
            #expect(missing?.isError == true)
        }
    }

    @Test func binaryAndOversizedFilesAreRefusedWithAReason() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            try Data([0x00, 0x01, 0x02]).write(to: URL(fileURLWithPath: directory + "/blob.bin"))
            try String(repeating: "x", count: 2_000).write(toFile: directory + "/big.txt", atomically: true, encoding: .utf8)
            let read = ReadFileTool(workspace: workspace, limits: FileToolLimits(maxReadBytes: 1_000))
            let binary = try await read.call(["path": "blob.bin"], context: context(workspace))
            #expect(binary.isError && binary.content.contains("binary"))
            let big = try await read.call(["path": "big.txt"], context: context(workspace))
            #expect(big.isError && big.content.contains("at most 1000"))
        }
    }

    @Test(arguments: ["fs_write", "fs_append"])
    func writesRefuseOversizedContentAndDirectories(tool name: String) async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            try FileManager.default.createDirectory(atPath: directory + "/folder", withIntermediateDirectories: true)
            let tools = try ToolRegistry(FileTools.all(workspace: workspace, limits: FileToolLimits(maxWriteBytes: 10)))
            let tool = try #require(tools.tool(named: name))
            let big = try await tool.call(
                ["path": "big.txt", "content": .string(String(repeating: "x", count: 11))], context: context(workspace))
            #expect(big.isError && big.content.contains("\(name) writes at most 10"))
            #expect(!FileManager.default.fileExists(atPath: directory + "/big.txt"))
            let folder = try await tool.call(["path": "folder", "content": "x"], context: context(workspace))
            #expect(folder.isError && folder.content.contains("'folder' is a directory"))
            await #expect(throws: TroupeError.self) {
                _ = try await tool.call(["path": "../escape.txt", "content": "x"], context: context(workspace))
            }
        }
    }

    @Test func effectsAreClassifiedForDurableResume() throws {
        let workspace = try Workspace(FileManager.default.temporaryDirectory.path)
        let effects = Dictionary(uniqueKeysWithValues: FileTools.all(workspace: workspace).map { ($0.name, $0.effect) })
        #expect(
            effects == [
                "fs_read": .readOnly, "fs_list": .readOnly, "fs_search": .readOnly, "fs_write": .idempotent, "fs_append": .sideEffecting,
                "fs_patch": .sideEffecting,
            ])
    }
}

@Suite struct ToolRegistryTests {
    @Test(arguments: ["fs_read", "a-b", String(repeating: "x", count: 64)])
    func acceptsNamesModelAPIsAccept(name: String) {
        #expect(ToolRegistry.isValidName(name))
    }

    @Test(arguments: ["", "has space", "dot.name", "ünï", String(repeating: "x", count: 65)])
    func refusesNamesModelAPIsRefuse(name: String) {
        #expect(!ToolRegistry.isValidName(name))
        #expect(throws: TroupeError.self) { _ = try ToolRegistry([CountingTool(name: name)]) }
    }

    @Test func policyNarrowsWhatIsOffered() throws {
        let registry = try ToolRegistry(
            [CountingTool(name: "a"), CountingTool(name: "b"), CountingTool(name: "c")],
            policy: ToolPolicy(allow: ["a", "b"], deny: ["b"])
        )
        #expect(registry.availableNames == ["a"])
        #expect(registry.tool(named: "b") == nil)
        #expect(registry.specs().map(\.name) == ["a"])
        #expect(throws: TroupeError.self) { _ = try ToolRegistry([CountingTool(name: "a"), CountingTool(name: "a")]) }
    }
}
