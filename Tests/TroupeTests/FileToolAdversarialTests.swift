import Foundation
import Testing
import Troupe
@testable import TroupeTools

/// The file tools against hostile paths and races, and `fs_search` / `fs_patch`.
@Suite struct FileToolAdversarialTests {
    func context(_ workspace: Workspace) -> ToolContext {
        ToolContext(runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: workspace.root, logger: .init(label: "t"))
    }

    /// A workspace `ws` inside `directory`, with `secret.txt` next to it (outside).
    private func withJail(_ body: (Workspace, String) async throws -> Void) async throws {
        try await withTemporaryDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory + "/ws/dir", withIntermediateDirectories: true)
            try "secret".write(toFile: directory + "/secret.txt", atomically: true, encoding: .utf8)
            try FileManager.default.createDirectory(atPath: directory + "/outside", withIntermediateDirectories: true)
            try "secret".write(toFile: directory + "/outside/file.txt", atomically: true, encoding: .utf8)
            try "x".write(toFile: directory + "/outside/marker-outside", atomically: true, encoding: .utf8)
            try "inside".write(toFile: directory + "/ws/dir/file.txt", atomically: true, encoding: .utf8)
            try await body(try Workspace(directory + "/ws"), directory)
        }
    }

    /// A directory swapped for a symlink to the outside after the path was checked (the race a
    /// hostile process sets up) is caught when the file is opened.
    @Test func aSymlinkSwappedInAfterTheCheckIsCaughtAtOpen() async throws {
        try await withJail { workspace, directory in
            let resolved = try workspace.resolve("dir/file.txt")
            try FileManager.default.moveItem(atPath: workspace.root + "/dir", toPath: directory + "/moved")
            try FileManager.default.createSymbolicLink(atPath: workspace.root + "/dir", withDestinationPath: directory + "/outside")
            let error = #expect(throws: TroupeError.self) {
                _ = try JailedFile.opening(resolved: resolved, requested: "dir/file.txt", in: workspace)
            }
            #expect(error?.code == .accessDenied)
            #expect(error?.message.contains("leads outside the workspace") == true)
        }
    }

    /// Another thread keeps swapping a directory for a symlink to the outside while the tools
    /// read and write through it: nothing outside is ever read or written.
    @Test func aDirectoryFlippingToASymlinkDuringCallsNeverLeaks() async throws {
        try await withJail { workspace, directory in
            let tools = try ToolRegistry(FileTools.all(workspace: workspace))
            let read = try #require(tools.tool(named: "fs_read"))
            let write = try #require(tools.tool(named: "fs_write"))
            let list = try #require(tools.tool(named: "fs_list"))
            let flipping = Flipper(link: workspace.root + "/dir", outside: directory + "/outside", parked: directory + "/parked")
            let flipper = Thread { flipping.run() }
            flipper.start()
            defer { flipping.stop() }
            for round in 0..<300 {
                if let output = try? await read.call(["path": "dir/file.txt"], context: context(workspace)) {
                    #expect(output.content != "secret", "read the outside file in round \(round)")
                }
                _ = try? await write.call(["path": "dir/new.txt", "content": "x"], context: context(workspace))
                // Only the outside folder has marker-outside: a listing that shows it went out.
                for arguments: JSONValue in [["path": "dir"], ["path": ".", "recursive": true]] {
                    if let output = try? await list.call(arguments, context: context(workspace)), !output.isError {
                        #expect(!output.content.contains("marker-outside"), "listed the outside folder in round \(round)")
                    }
                }
            }
            flipping.stop()
            #expect(!FileManager.default.fileExists(atPath: directory + "/outside/new.txt"), "wrote outside")
            #expect(try String(contentsOfFile: directory + "/outside/file.txt", encoding: .utf8) == "secret")
        }
    }

    @Test func aFIFOIsRefusedWithoutHanging() async throws {
        try await withJail { workspace, _ in
            #expect(mkfifo(workspace.root + "/pipe", 0o600) == 0)
            let read = ReadFileTool(workspace: workspace)
            let output = try await read.call(["path": "pipe"], context: context(workspace))
            #expect(output.isError && output.content.contains("not a regular file"))
        }
    }

    @Test func writesAreAtomicKeepTheModeAndLeaveNoTemporaryFiles() async throws {
        try await withJail { workspace, _ in
            let write = WriteFileTool(workspace: workspace)
            let path = workspace.root + "/dir/file.txt"
            #expect(chmod(path, 0o600) == 0)
            let output = try await write.call(["path": "dir/file.txt", "content": "replaced"], context: context(workspace))
            #expect(!output.isError)
            #expect(try String(contentsOfFile: path, encoding: .utf8) == "replaced")
            let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            #expect(try FileManager.default.contentsOfDirectory(atPath: workspace.root + "/dir") == ["file.txt"])
        }
    }

    @Test func partsOfAFileTooLargeToReadWholeAreStreamed() async throws {
        try await withJail { workspace, _ in
            let text = (1...20_000).map { "line \($0)" }.joined(separator: "\n") + "\n"
            try text.write(toFile: workspace.root + "/big.log", atomically: true, encoding: .utf8)
            let read = ReadFileTool(workspace: workspace, limits: FileToolLimits(maxReadBytes: 1_000))
            let whole = try await read.call(["path": "big.log"], context: context(workspace))
            #expect(whole.isError && whole.content.contains("Give startLine and lineCount"))
            let part = try await read.call(["path": "big.log", "startLine": 15_000, "lineCount": 3], context: context(workspace))
            #expect(part.content == "line 15000\nline 15001\nline 15002")
            let last = try await read.call(["path": "big.log", "startLine": 20_000, "lineCount": 5], context: context(workspace))
            #expect(last.content == "line 20000")
            let beyond = try await read.call(["path": "big.log", "startLine": 30_000, "lineCount": 1], context: context(workspace))
            #expect(beyond.isError && beyond.content.contains("has only 20000 lines"))
            let many = try await read.call(["path": "big.log", "startLine": 1, "lineCount": 5_000], context: context(workspace))
            #expect(many.content.hasSuffix("[cut at 1000 bytes; ask for fewer lines]"))
        }
    }

    // MARK: - fs_search

    @Test func searchFindsLinesAndSkipsWhatItShould() async throws {
        try await withJail { workspace, directory in
            let root = workspace.root
            try "let a = 1\nTODO: first\nlet b = 2\n".write(toFile: root + "/dir/a.swift", atomically: true, encoding: .utf8)
            try "todo: lower\n".write(toFile: root + "/notes.md", atomically: true, encoding: .utf8)
            try Data([0x54, 0x4F, 0x44, 0x4F, 0x00]).write(to: URL(fileURLWithPath: root + "/blob.bin"))
            try FileManager.default.createDirectory(atPath: root + "/.git", withIntermediateDirectories: true)
            try "TODO: in git\n".write(toFile: root + "/.git/HEAD", atomically: true, encoding: .utf8)
            try "TODO: outside\n".write(toFile: directory + "/outside/todo.txt", atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: root + "/link", withDestinationPath: directory + "/outside")
            let search = SearchFilesTool(workspace: workspace)
            let ctx = context(workspace)

            let plain = try await search.call(["pattern": "TODO"], context: ctx)
            #expect(plain.content.hasPrefix("dir/a.swift:2: TODO: first\n"))
            #expect(plain.content.contains("1 matches in 1 of 4 files; 1 binary files skipped"))
            #expect(!plain.content.contains("outside") && !plain.content.contains("in git"))

            let folded = try await search.call(["pattern": "todo", "ignoreCase": true, "fileSuffix": ".md"], context: ctx)
            #expect(folded.content.hasPrefix("notes.md:1: todo: lower"))

            let regex = try await search.call(["pattern": "^let [ab] = \\d$", "regex": true, "path": "dir"], context: ctx)
            #expect(regex.content.hasPrefix("dir/a.swift:1: let a = 1\ndir/a.swift:3: let b = 2\n"))

            let invalid = try await search.call(["pattern": "([", "regex": true], context: ctx)
            #expect(invalid.isError && invalid.content.contains("not a valid regular expression"))
            await #expect(throws: TroupeError.self) { _ = try await search.call(["pattern": "x", "path": "../outside"], context: ctx) }
        }
    }

    @Test func searchStopsAtItsCapsAndSaysSo() async throws {
        try await withJail { workspace, _ in
            try String(repeating: "hit\n", count: 50).write(toFile: workspace.root + "/many.txt", atomically: true, encoding: .utf8)
            let search = SearchFilesTool(workspace: workspace, limits: FileToolLimits(maxSearchResults: 10))
            let output = try await search.call(["pattern": "hit"], context: context(workspace))
            #expect(output.content.split(separator: "\n").count == 11)
            #expect(output.content.contains("the search stopped at 10 matches"))
        }
    }

    // MARK: - fs_patch

    @Test func searchAndReplaceEditsExactlyWhatItShould() async throws {
        try await withJail { workspace, _ in
            let path = workspace.root + "/code.txt"
            try "alpha\n    beta\nalpha\n".write(toFile: path, atomically: true, encoding: .utf8)
            let patch = PatchFileTool(workspace: workspace)
            let ctx = context(workspace)

            let ambiguous = try await patch.call(["path": "code.txt", "search": "alpha", "replace": "x"], context: ctx)
            #expect(ambiguous.isError && ambiguous.content.contains("occurs 2 times (lines 1, 3)"))
            let missing = try await patch.call(["path": "code.txt", "search": "beta\n", "replace": "x"], context: ctx)
            #expect(missing.isError == false, "beta followed by a newline is there")
            let indented = try await patch.call(["path": "code.txt", "search": "  alpha", "replace": "x"], context: ctx)
            #expect(indented.isError && indented.content.contains("not in the file"))
            let all = try await patch.call(["path": "code.txt", "search": "alpha", "replace": "omega", "replaceAll": true], context: ctx)
            #expect(all.content.contains("2 replacements"))
            #expect(try String(contentsOfFile: path, encoding: .utf8) == "omega\n    xomega\n")
            let both = try await patch.call(["path": "code.txt", "search": "a", "replace": "b", "diff": "@@ -1 +1 @@"], context: ctx)
            #expect(both.isError)
        }
    }

    @Test func aUnifiedDiffAppliesWithDriftAndConflictsChangeNothing() async throws {
        try await withJail { workspace, _ in
            let path = workspace.root + "/list.txt"
            let original = (1...20).map { "line \($0)" }.joined(separator: "\n") + "\n"
            try original.write(toFile: path, atomically: true, encoding: .utf8)
            let patch = PatchFileTool(workspace: workspace)
            let ctx = context(workspace)
            // The second hunk's line numbers are off by two (as if written against an older file).
            let diff = """
                --- a/list.txt
                +++ b/list.txt
                @@ -2,3 +2,4 @@
                 line 2
                -line 3
                +line three
                +line 3.5
                 line 4
                @@ -13,2 +14,2 @@
                 line 15
                -line 16
                +line sixteen
                """
            let applied = try await patch.call(["path": "list.txt", "diff": .string(diff)], context: ctx)
            #expect(!applied.isError, "\(applied.content)")
            #expect(applied.content.contains("2 hunks applied, +3 −2 lines"))
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(text.contains("line 2\nline three\nline 3.5\nline 4\n"))
            #expect(text.contains("line 15\nline sixteen\nline 17\n"))

            let before = try String(contentsOfFile: path, encoding: .utf8)
            let conflicting = """
                @@ -1,2 +1,2 @@
                 line 1
                -line 2
                +line two
                @@ -30,1 +30,1 @@
                -line 99
                +line ninety-nine
                """
            let conflict = try await patch.call(["path": "list.txt", "diff": .string(conflicting)], context: ctx)
            #expect(conflict.isError)
            #expect(conflict.content.contains("hunk 2 (@@ -30,1 +30,1 @@) does not match the file"))
            #expect(conflict.content.contains("Nothing was changed"))
            #expect(try String(contentsOfFile: path, encoding: .utf8) == before, "the first hunk was not applied either")

            let malformed = try await patch.call(["path": "list.txt", "diff": "@@ nonsense @@\n"], context: ctx)
            #expect(malformed.isError && malformed.content.contains("not a hunk header"))
        }
    }

    @Test func aDiffFromDevNullCreatesTheFile() async throws {
        try await withJail { workspace, _ in
            let diff = "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1,2 @@\n+first\n+second\n"
            let output = try await PatchFileTool(workspace: workspace).call(
                ["path": "dir/new.txt", "diff": .string(diff)], context: context(workspace))
            #expect(!output.isError, "\(output.content)")
            #expect(try String(contentsOfFile: workspace.root + "/dir/new.txt", encoding: .utf8) == "first\nsecond\n")
        }
    }

    @Test func patchRefusesBinariesAndPathsOutside() async throws {
        try await withJail { workspace, _ in
            try Data([0, 1, 2]).write(to: URL(fileURLWithPath: workspace.root + "/blob.bin"))
            let patch = PatchFileTool(workspace: workspace)
            let binary = try await patch.call(["path": "blob.bin", "search": "a", "replace": "b"], context: context(workspace))
            #expect(binary.isError && binary.content.contains("binary"))
            await #expect(throws: TroupeError.self) {
                _ = try await patch.call(["path": "../secret.txt", "search": "secret", "replace": "x"], context: context(workspace))
            }
        }
    }
}

/// Swaps a directory for a symlink to the outside and back, as fast as it can, until stopped.
final class Flipper: @unchecked Sendable {
    // Safety: `running` is only touched under `lock`.
    private let lock = NSLock()
    private var running = true
    let link: String
    let outside: String
    let parked: String

    init(link: String, outside: String, parked: String) {
        self.link = link
        self.outside = outside
        self.parked = parked
    }

    func run() {
        while lock.withLock({ running }) {
            rename(link, parked)
            symlink(outside, link)
            unlink(link)
            rename(parked, link)
        }
    }

    func stop() { lock.withLock { running = false } }
}
