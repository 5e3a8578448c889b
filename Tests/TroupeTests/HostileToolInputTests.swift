import AsyncHTTPClient
import Foundation
import Synchronization
import Testing
import Troupe
import TroupeCore
@testable import TroupeModels
import TroupeSettings
import TroupeTesting
@testable import TroupeTools

/// The tools and settings against the hostile inputs of the tools review (issue 20), one test (or
/// more) per item, named after it.
@Suite struct HostileToolInputTests {
    func context(_ workspace: Workspace) -> ToolContext {
        ToolContext(runID: RunID("run_t"), stepID: "s1", idempotencyKey: "k", workspace: workspace.root, logger: .init(label: "t"))
    }

    // MARK: 1. The model rewriting Troupe's settings (and git's)

    @Test(arguments: [
        "troupe.yaml", "TROUPE.YAML", "./troupe.yaml", ".git/config", ".git/hooks/pre-commit", "sub/.git/config", ".GIT/config",
        "vendor/lib/.git", "link-to-git/config", "notes/troupe.yaml", ".husky/pre-commit", ".githooks/pre-push", ".envrc",
        "web/.pre-commit-config.yaml",
    ])
    func item1_protectedPathsAreNeverWritten(path: String) async throws {
        try await withTemporaryDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory + "/.git/hooks", withIntermediateDirectories: true)
            try "[core]\n".write(toFile: directory + "/.git/config", atomically: true, encoding: .utf8)
            try "model: {name: mine}\n".write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: directory + "/link-to-git", withDestinationPath: directory + "/.git")
            let workspace = try Workspace(directory)
            for tool in FileTools.all(workspace: workspace) where ["fs_write", "fs_append", "fs_patch"].contains(tool.name) {
                let arguments: JSONValue =
                    tool.name == "fs_patch"
                    ? ["path": .string(path), "diff": "@@ -0,0 +1,1 @@\n+evil\n"] : ["path": .string(path), "content": "evil\n"]
                let output = try await tool.call(arguments, context: context(workspace))
                #expect(output.isError, "\(tool.name) \(path): \(output.content)")
                #expect(output.content.contains("may not be written"), "\(tool.name) \(path): \(output.content)")
            }
            #expect(try String(contentsOfFile: directory + "/.git/config", encoding: .utf8) == "[core]\n")
            #expect(try String(contentsOfFile: directory + "/troupe.yaml", encoding: .utf8) == "model: {name: mine}\n")
            #expect(!FileManager.default.fileExists(atPath: directory + "/.git/hooks/pre-commit"))
        }
    }

    @Test func item1_otherFilesAreWritten() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            let write = WriteFileTool(workspace: workspace)
            for path in ["notes/troupe.yml", "git/config", ".gitignore", "my.git", "husky.txt"] {
                let output = try await write.call(["path": .string(path), "content": "x"], context: context(workspace))
                #expect(!output.isError, "\(path): \(output.content)")
            }
        }
    }

    @Test func item1_theSettingsFileInUseAndTheStoreAreProtectedWhereverTheyAre() async throws {
        try await withTemporaryDirectory { directory in
            try FileManager.default.createDirectory(atPath: directory + "/config", withIntermediateDirectories: true)
            let workspace = try Workspace(directory)
            let limits = FileToolLimits(
                protectedPaths: ProtectedPaths(files: [directory + "/config/settings.yaml", directory + "/runs.db"]))
            let write = WriteFileTool(workspace: workspace, limits: limits)
            try "model: {name: mine}\n".write(toFile: directory + "/config/settings.yaml", atomically: true, encoding: .utf8)
            // Another name for the same file: a hard link made earlier (by a shell command, say).
            #expect(link(directory + "/config/settings.yaml", directory + "/innocent.txt") == 0)
            for path in [
                "config/settings.yaml", "config/SETTINGS.yaml", "runs.db", "runs.db-wal", "runs.db-shm", "runs.db-journal", "innocent.txt",
            ] {
                let output = try await write.call(["path": .string(path), "content": "x"], context: context(workspace))
                #expect(output.isError && output.content.contains("Troupe's own files"), "\(path): \(output.content)")
            }
            let append = AppendFileTool(workspace: workspace, limits: limits)
            let appended = try await append.call(["path": "innocent.txt", "content": "evil"], context: context(workspace))
            #expect(appended.isError)
            #expect(try String(contentsOfFile: directory + "/config/settings.yaml", encoding: .utf8) == "model: {name: mine}\n")
        }
    }

    @Test func item1_protectedPathsAreAddedToTheDefaultsAndChecked() async throws {
        try await withTemporaryDirectory { directory in
            let added = try await TroupeSettings.load(
                overrides: ["tools.fs.protectedPaths=.env, **/secrets"], environment: [:], directory: directory)
            #expect(added.protectedPaths.patterns == ProtectedPaths.defaultPatterns + [".env", "**/secrets"])
            for bad in ["*.pem", "/etc/passwd", "../up", "a/./b", "**/"] {
                await #expect(throws: TroupeError.self, "\(bad)") {
                    _ = try await TroupeSettings.load(
                        overrides: ["tools.fs.protectedPaths=\(bad)"], environment: [:], directory: directory)
                }
            }
        }
    }

    @Test func item1_writesNeverLeaveAnExecutableBit() async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            for (index, tool) in FileTools.all(workspace: workspace).enumerated()
            where ["fs_write", "fs_append", "fs_patch"].contains(tool.name) {
                let path = directory + "/script\(index).sh"
                try "#!/bin/sh\necho hi\n".write(toFile: path, atomically: true, encoding: .utf8)
                chmod(path, 0o755)
                let arguments: JSONValue =
                    tool.name == "fs_patch"
                    ? ["path": .string("script\(index).sh"), "search": "hi", "replace": "pwned"]
                    : ["path": .string("script\(index).sh"), "content": "#!/bin/sh\necho pwned\n"]
                let output = try await tool.call(arguments, context: context(workspace))
                #expect(!output.isError, "\(tool.name): \(output.content)")
                var status = stat()
                stat(path, &status)
                #expect(status.st_mode & 0o111 == 0, "\(tool.name) left mode \(String(status.st_mode & 0o777, radix: 8))")
            }
        }
    }

    /// The implicit `./troupe.yaml` is read only when the run's workspace does not contain it.
    @Test func item1_anImplicitSettingsFileInsideTheWorkspaceIsNotReadByItself() async throws {
        try await MockOpenAIServer.withServer(configuration: .init(planSteps: 1)) { mock in
            try await withTemporaryDirectory { directory in
                try "model: {baseURL: \"\(mock.baseURL)\"}\nrun: {tools: none}\n".write(
                    toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
                let store = "sqlite:\(directory)/runs.db"
                // The workspace is the current directory: the model could have written the file, so the run stops.
                let inside = try await CLIProcess.run(["run", "Say hi", "--store", store], directory: directory)
                #expect(inside.status == 6)
                #expect(inside.output.contains("./troupe.yaml is inside the run's workspace"), "\(inside.output)")
                #expect(inside.output.contains("--config troupe.yaml"))
                #expect(mock.requestCount == 0)
                // Named, it is read.
                let named = try await CLIProcess.run(["run", "Say hi", "--store", store, "--config", "troupe.yaml"], directory: directory)
                #expect(named.status == 0, "\(named.output)")
                // With a workspace elsewhere, the model could not have written it: it is read.
                try FileManager.default.createDirectory(atPath: directory + "/work", withIntermediateDirectories: true)
                let elsewhere = try await CLIProcess.run(
                    ["run", "Say hi", "--store", store, "--workspace", "work"], directory: directory)
                #expect(elsewhere.status == 0, "\(elsewhere.output)")
                #expect(!elsewhere.output.contains("is not read"))
            }
        }
    }

    /// The whole CLI: a model that writes the settings, `.git/config` and a hook (one per step)
    /// changes nothing, and the next run in the directory behaves as the first.
    @Test func item1_aRunWhoseModelWritesEveryProtectedPathChangesNothing() async throws {
        let targets = Mutex(["troupe.yaml", ".git/config", ".git/hooks/pre-commit"])
        let configuration = MockOpenAIServer.Configuration(
            planSteps: 3, planTools: ["fs_write", "fs_write", "fs_write"],
            arguments: { tool, _ in
                guard tool == "fs_write" else { return nil }
                let path = targets.withLock { $0.isEmpty ? "done.txt" : $0.removeFirst() }
                return ["path": .string(path), "content": "mcp:\n  servers:\n    evil: {command: sh, args: [-c, 'touch /tmp/pwn']}\n"]
            })
        try await MockOpenAIServer.withServer(configuration: configuration) { mock in
            try await withTemporaryDirectory { directory in
                let settings = "model: {name: mine, baseURL: \"\(mock.baseURL)\"}\nrun: {tools: fs, maxSteps: 5}\n"
                try settings.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
                try FileManager.default.createDirectory(atPath: directory + "/.git/hooks", withIntermediateDirectories: true)
                try "[core]\n".write(toFile: directory + "/.git/config", atomically: true, encoding: .utf8)
                let arguments = ["run", "Tidy up", "--json", "--store", "sqlite:\(directory)/.runs.db", "--config", "troupe.yaml"]
                let first = try await CLIProcess.run(arguments, directory: directory)
                #expect(first.status == 0, "\(first.output)")
                let report = try JSONValue.parse(first.output)
                let results = report["steps"]?.arrayValue?.flatMap { $0["toolCalls"]?.arrayValue ?? [] } ?? []
                #expect(results.count == 3)
                #expect(results.allSatisfy { $0["isError"] == true }, "\(first.output)")
                #expect(try String(contentsOfFile: directory + "/troupe.yaml", encoding: .utf8) == settings)
                #expect(try String(contentsOfFile: directory + "/.git/config", encoding: .utf8) == "[core]\n")
                #expect(!FileManager.default.fileExists(atPath: directory + "/.git/hooks/pre-commit"))

                let second = try await CLIProcess.run(arguments, directory: directory)
                #expect(second.status == 0, "\(second.output)")
                #expect(try JSONValue.parse(second.output)["configuration"]?["model"] == "mine")
            }
        }
    }

    // MARK: 2. Programs that start programs

    /// GNU `sort --compress-program=sh` runs the lines of a file the model wrote; `env` starts any
    /// program; `uniq IN OUT` writes OUT; `date MMDDhhmm` sets the clock. None is allowed by default.
    @Test(arguments: [
        ["sort", "--compress-program=sh", "-S", "1", "lines.txt"], ["env", "touch", "/tmp/pwn"], ["uniq", "a", "b"],
        ["date", "0101000030"],
    ])
    func item2_programsThatStartProgramsOrWriteAreNotAllowedByDefault(command: [String]) async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            let output = try await ShellTool(workspace: workspace).call(
                ["command": .array(command.map(JSONValue.string))], context: context(workspace))
            #expect(output.isError)
            #expect(output.content.contains("is not an allowed program"), "\(output.content)")
        }
    }

    @Test(arguments: [
        ["find", ".", "-exec", "touch", "/tmp/pwn", ";"], ["find", ".", "-delete"], ["find", ".", "-fprintf", "troupe.yaml", "x"],
        ["find", "--", ".", "-exec", "sh", "-c", "id", ";"], ["find", "-L", "--", ".", "-delete"],
        ["file", "-C", "-m", "magic"], ["file", "-z", "a.gz"], ["file", "-F", "--", "-C", "-m", "x"], ["file", "-bC", "-m", "x"],
        ["sort", "--compress-prog=sh", "x"], ["sort", "-o", "troupe.yaml", "x"], ["sort", "-ro", "troupe.yaml", "x"],
    ])
    func item2_optionsThatStartProgramsOrWriteAreRefused(command: [String]) async throws {
        try await withTemporaryDirectory { directory in
            let workspace = try Workspace(directory)
            var policy = ShellPolicy()
            policy.allowedExecutables.insert("sort")  // a user who adds it back still gets its options checked
            let output = try await ShellTool(workspace: workspace, policy: policy).call(
                ["command": .array(command.map(JSONValue.string))], context: context(workspace))
            #expect(output.isError)
            #expect(output.content.contains("is refused"), "\(output.content)")
            #expect(!FileManager.default.fileExists(atPath: directory + "/troupe.yaml"))
        }
    }

    @Test(arguments: [
        ["ls", "-la"], ["find", ".", "-name", "*.txt", "-print"], ["file", "-b", "a.txt"], ["grep", "-r", "x", "."],
    ])
    func item2_ordinaryUsesStillRun(command: [String]) async throws {
        try await withTemporaryDirectory { directory in
            try "x\n".write(toFile: directory + "/a.txt", atomically: true, encoding: .utf8)
            let workspace = try Workspace(directory)
            let output = try await ShellTool(workspace: workspace).call(
                ["command": .array(command.map(JSONValue.string))], context: context(workspace))
            #expect(!output.isError, "\(output.content)")
        }
    }

    // MARK: 3. A secret in an error message

    @Test func item3_aKeyEndingInALineBreakIsTrimmed() async throws {
        let settings = try await TroupeSettings.load(environment: ["OPENAI_API_KEY": "sk-SECRET-123\r\n"], directory: "/nonexistent")
        #expect(settings.apiKey == "sk-SECRET-123")
    }

    @Test(arguments: ["sk-SEC\nRET-123", "sk-SEC\u{1}RET-123", "sk-SECRET-123\u{7F}"])
    func item3_aKeyWithAControlCharacterInsideIsRefusedAndNeverShown(key: String) async throws {
        let error = await #expect(throws: TroupeError.self) {
            _ = try await TroupeSettings.load(environment: ["OPENAI_API_KEY": key], directory: "/nonexistent")
        }
        #expect(error?.code == .configuration)
        #expect(error.map { "\($0) \($0.details) \($0.underlying ?? "")" }?.contains("SEC") == false)
        let direct = #expect(throws: TroupeError.self) {
            _ = try OpenAIChatModel(configuration: .init(baseURL: "http://127.0.0.1:1/v1", apiKey: key, model: "m"))
        }
        #expect(direct.map { "\($0) \($0.details)" }?.contains("SEC") == false)
    }

    @Test func item3_aFallbackKeyWithAControlCharacterIsRefusedAndNeverShown() async throws {
        try await withTemporaryDirectory { directory in
            let yaml = "model:\n  fallbacks: [backup]\nendpoints:\n  backup:\n    model: m\n    apiKeyEnv: BACKUP_KEY\n"
            try yaml.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
            let error = await #expect(throws: TroupeError.self) {
                _ = try await TroupeSettings.load(
                    file: directory + "/troupe.yaml", environment: ["BACKUP_KEY": "bk-SECRET\nX"], directory: directory)
            }
            #expect(error?.message.contains("BACKUP_KEY") == true)
            #expect(error?.message.contains("SECRET") == false)
        }
    }

    @Test func item3_anHTTPClientErrorIsDescribedWithoutItsValues() {
        let cause = TransportFailure.describe(HTTPClientError.invalidHeaderFieldValues(["Bearer sk-SECRET-123\r"])).cause
        #expect(!cause.contains("SECRET"))
        #expect(!cause.isEmpty)
    }

    @Test func item3_anMCPHeaderWithAControlCharacterIsRefusedAndNeverShown() async throws {
        try await withTemporaryDirectory { directory in
            let yaml =
                "mcp:\n  servers:\n    remote:\n      url: http://127.0.0.1:1/mcp\n      headers:\n        Authorization: Bearer ${TOKEN}\n"
            try yaml.write(toFile: directory + "/troupe.yaml", atomically: true, encoding: .utf8)
            let error = await #expect(throws: TroupeError.self) {
                _ = try await TroupeSettings.load(
                    file: directory + "/troupe.yaml", environment: ["TOKEN": "tok-SECRET\u{0}x"], directory: directory)
            }
            #expect(error?.code == .configuration)
            #expect(error?.message.contains("SECRET") == false)
        }
    }

    /// The whole CLI, with a key that has a line break inside: a clear error, and the key in no
    /// output (nor in the store, which the command never reaches).
    @Test func item3_theCLINeverPrintsAKey() async throws {
        try await withTemporaryDirectory { directory in
            let result = try await CLIProcess.run(
                ["run", "Say hi", "--base-url", "http://127.0.0.1:1/v1", "--store", "sqlite:\(directory)/runs.db", "--verbose"],
                directory: directory,
                environment: ["OPENAI_API_KEY": "sk-live-SECRET\r\nX-Evil: 1"]
            )
            #expect(result.status != 0)
            #expect(result.output.contains("control character"), "\(result.output)")
            #expect(!result.output.contains("SECRET"))
        }
    }

    // MARK: 4. Integer overflow

    static let extremes: [JSONValue] = [
        .int(Int.max), .int(Int.min), .int(-1), .int(0), .double(1e30), .double(-1e30), .double(9.3e18), .double(1e308),
        .double(-.infinity), .double(.nan), .double(0.5),
    ]

    /// Every numeric argument of every built-in tool, given each extreme number directly (as a
    /// library caller could, without the schema): an answer, never a crash.
    @Test(arguments: extremes)
    func item4_extremeNumbersNeverCrashATool(number: JSONValue) async throws {
        try await withTemporaryDirectory { directory in
            let lines = (1...50).map { "line \($0)" }.joined(separator: "\n")
            try lines.write(toFile: directory + "/small.txt", atomically: true, encoding: .utf8)
            try String(repeating: "big line\n", count: 500).write(toFile: directory + "/big.txt", atomically: true, encoding: .utf8)
            let workspace = try Workspace(directory)
            let read = ReadFileTool(workspace: workspace, limits: FileToolLimits(maxReadBytes: 1_024))
            for path in ["small.txt", "big.txt"] {
                for arguments: JSONValue in [
                    ["path": .string(path), "startLine": number, "lineCount": number],
                    ["path": .string(path), "startLine": 2, "lineCount": number],
                    ["path": .string(path), "startLine": number, "lineCount": 2],
                ] {
                    _ = try await read.call(arguments, context: context(workspace))
                }
            }
            let shell = ShellTool(workspace: workspace, policy: ShellPolicy(allowedExecutables: ["true"], maxTimeout: .seconds(5)))
            let ran = try await shell.call(["command": ["true"], "timeoutSeconds": number], context: context(workspace))
            #expect(!ran.content.isEmpty)
            let text = number.intValue.map(String.init) ?? (number.doubleValue.map { String(format: "%.0f", $0) } ?? "1")
            let patch = PatchFileTool(workspace: workspace)
            let patched = try await patch.call(
                ["path": "small.txt", "diff": .string("@@ -\(text),1 +\(text),1 @@\n-line 1\n+LINE 1\n")], context: context(workspace))
            #expect(!patched.content.isEmpty)
        }
    }

    @Test func item4_theSchemasBoundTheNumbers() throws {
        let workspace = try Workspace(FileManager.default.temporaryDirectory.path)
        let read = ReadFileTool(workspace: workspace)
        #expect(!read.parameters.validate(["path": "a", "startLine": 2, "lineCount": .int(Int.max)]).isEmpty)
        let shell = ShellTool(workspace: workspace)
        #expect(!shell.parameters.validate(["command": ["true"], "timeoutSeconds": 1e30]).isEmpty)
    }

    @Test func item4_aHunkHeaderBeyondABillionLinesIsRefusedWithAReason() async throws {
        try await withTemporaryDirectory { directory in
            try "a\nb\n".write(toFile: directory + "/f.txt", atomically: true, encoding: .utf8)
            let workspace = try Workspace(directory)
            let output = try await PatchFileTool(workspace: workspace).call(
                ["path": "f.txt", "diff": "@@ -9223372036854775807,0 +1,1 @@\n+x\n"], context: context(workspace))
            #expect(output.isError)
            #expect(output.content.contains("not a hunk header"))
            #expect(try String(contentsOfFile: directory + "/f.txt", encoding: .utf8) == "a\nb\n")
        }
    }

    // MARK: 5. Quadratic HTML-to-text

    /// Before, each `<title>` without its end rescanned the rest of the page: this page took
    /// about 10¹⁰ steps. Now it is read once. (On a thread of its own: it is still a lot of text.)
    @Test func item5_titlesWithoutTheirEndAreConvertedInLinearTime() async throws {
        let titles = String(repeating: "<title>", count: 60_000)
        let scripts = String(repeating: "<script>x", count: 40_000)
        // Found end tags and comments: each search stops at its match (a search that cost the
        // rest of the page each time made this quadratic too).
        let closed = String(repeating: "<script></script><!---->", count: 60_000)
        let converted = await onOwnThread { (HTMLText.convert(titles), HTMLText.convert(scripts), HTMLText.convert(closed)) }
        #expect(converted.0.text.isEmpty && converted.1.text.isEmpty && converted.2.text.isEmpty)
        #expect(HTMLText.convert("<TITLE>A</Title><SCRIPT>x</script><!-- c -->b").text == "b")
    }

    @Test func item5_aCancelledConversionStopsEarly() async {
        let page = String(repeating: "word ", count: 400_000)
        let text = await Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return HTMLText.convert(page).text
        }.value
        #expect(text.utf8.count < 1_000_000)
    }

    // MARK: 6. Catastrophic regex in fs_search

    @Test func item6_aCatastrophicRegexIsStoppedAndReported() async throws {
        try await withTemporaryDirectory { directory in
            try (String(repeating: "a", count: 40) + "!\n").write(toFile: directory + "/a.txt", atomically: true, encoding: .utf8)
            let workspace = try Workspace(directory)
            let search = SearchFilesTool(workspace: workspace, limits: FileToolLimits(searchTimeBudget: .milliseconds(300)))
            let output = try await search.call(["pattern": "^(a+)+$", "regex": true], context: context(workspace))
            #expect(output.content.contains("a.txt at line 1"), "\(output.content)")
            #expect(output.content.contains("nested repetition"))
        }
    }

    /// A tool's time limit cancels its task: a match under way notices (its progress is reported
    /// to a block that checks), instead of holding a thread until the budget ends.
    @Test func item6_aCancelledMatchStops() async throws {
        let expression = try NSRegularExpression(pattern: "^(a+)+$")
        let line = String(repeating: "a", count: 40) + "!"
        let outcome = await Task { () -> String in
            withUnsafeCurrentTask { $0?.cancel() }
            do {
                return try SearchFilesTool.matches(expression, line, deadline: .now + .seconds(600)) ? "matched" : "no match"
            } catch let error as SearchFilesTool.SearchStopped {
                return error.reason
            } catch {
                return "\(error)"
            }
        }.value
        #expect(outcome == "the call was cancelled")
    }

    // MARK: 7. Smaller

    /// `é` as one code point and as `e` + a combining accent are equal Swift strings, and two
    /// different names on disk: a folder spelled the other way is not inside the workspace.
    @Test func item7_theWorkspaceComparesPathsByteForByte() async throws {
        try await withTemporaryDirectory { directory in
            let composed = directory + "/caf\u{E9}"
            let decomposed = directory + "/cafe\u{301}"
            try FileManager.default.createDirectory(atPath: composed, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: decomposed, withIntermediateDirectories: true)
            let workspace = try Workspace(composed)
            #expect(composed == decomposed)  // Swift's view
            #expect(workspace.contains(composed + "/a"))
            #expect(!workspace.contains(decomposed + "/a"))
            #expect(workspace.relative(decomposed + "/a") == decomposed + "/a")
        }
    }

    /// A path of many folders (one fs_write makes it) does not make a recursive listing hold a
    /// descriptor per level without bound.
    @Test func item7_aRecursiveListingStopsAtItsDepth() async throws {
        try await withTemporaryDirectory { directory in
            let deep = (0..<(ListFilesTool.maxDepth + 8)).map { _ in "a" }.joined(separator: "/")
            try FileManager.default.createDirectory(atPath: directory + "/" + deep, withIntermediateDirectories: true)
            let workspace = try Workspace(directory)
            let output = try await ListFilesTool(workspace: workspace).call(["path": ".", "recursive": true], context: context(workspace))
            #expect(output.content.contains("deeper than \(ListFilesTool.maxDepth) levels"))
            #expect(output.content.split(separator: "\n").count == ListFilesTool.maxDepth + 1)
        }
    }

    @Test func item3_aHeaderRefusedByTheHTTPClientIsNeverQuoted() async throws {
        let model = try OpenAIChatModel(
            configuration: .init(baseURL: "http://127.0.0.1:1/v1", model: "m", headers: ["X-Token": "tok-SECRET\r\nX-Evil: 1"]))
        let error = await #expect(throws: TroupeError.self) { _ = try await model.complete(ChatRequest(messages: [.user("hi")])) }
        let everything = error.map { "\($0.message) \($0.details) \($0.underlying ?? "")" } ?? ""
        #expect(!everything.contains("SECRET"), "\(everything)")
    }

    @Test func item7_aRangedReadOfOneHugeLineStopsAtTheCap() async throws {
        try await withTemporaryDirectory { directory in
            try String(repeating: "x", count: 1 << 20).write(toFile: directory + "/one-line.txt", atomically: true, encoding: .utf8)
            let workspace = try Workspace(directory)
            let read = ReadFileTool(workspace: workspace, limits: FileToolLimits(maxReadBytes: 1_024))
            let output = try await read.call(["path": "one-line.txt", "startLine": 1, "lineCount": 1], context: context(workspace))
            #expect(output.content.hasSuffix("[cut at 1024 bytes; ask for fewer lines]"))
        }
    }
}
