import Foundation
public import TroupeCore

/// The file tools (`fs_read`, `fs_write`, `fs_append`, `fs_list`), all jailed to one ``Workspace``.
public enum FileTools {
    /// Every file tool, bound to `workspace`.
    public static func all(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) -> [any Tool] {
        [
            ReadFileTool(workspace: workspace, limits: limits),
            WriteFileTool(workspace: workspace, limits: limits),
            AppendFileTool(workspace: workspace, limits: limits),
            ListFilesTool(workspace: workspace, limits: limits),
        ]
    }
}

/// Size caps of the file tools.
public struct FileToolLimits: Sendable, Hashable {
    /// The largest file `fs_read` reads, in bytes.
    public var maxReadBytes: Int
    /// The largest content `fs_write`/`fs_append` accept, in bytes.
    public var maxWriteBytes: Int
    /// The most entries `fs_list` returns.
    public var maxListEntries: Int

    public init(maxReadBytes: Int = 1 << 20, maxWriteBytes: Int = 1 << 20, maxListEntries: Int = 1_000) {
        self.maxReadBytes = maxReadBytes
        self.maxWriteBytes = maxWriteBytes
        self.maxListEntries = maxListEntries
    }
}

/// `fs_read`: a text file's content, optionally a range of lines.
public struct ReadFileTool: Tool {
    public let workspace: Workspace
    public let limits: FileToolLimits
    public let name = "fs_read"
    public let description = "Read a text file in the workspace. Optionally give startLine and lineCount (1-based) to read part of it."
    public let effect = ToolEffect.readOnly
    public let parameters: JSONSchema = .object(
        [
            .init("path", .string("Path relative to the workspace root.", minLength: 1)),
            .init("startLine", .integer("First line to return, 1-based.", minimum: 1)),
            .init("lineCount", .integer("How many lines to return.", minimum: 1)),
        ],
        required: ["path"]
    )

    public init(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) {
        self.workspace = workspace
        self.limits = limits
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        let path = try workspace.resolve(arguments["path"]?.stringValue ?? "")
        let shown = workspace.relative(path)
        let attributes: [FileAttributeKey: Any]
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: path)
        } catch {
            return .error("No file '\(shown)'. List the directory with fs_list to see what exists.")
        }
        if (attributes[.type] as? FileAttributeType) == .typeDirectory {
            return .error("'\(shown)' is a directory; use fs_list.")
        }
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        guard size <= limits.maxReadBytes else {
            return .error("'\(shown)' has \(size) bytes; fs_read reads at most \(limits.maxReadBytes).")
        }
        guard let data = FileManager.default.contents(atPath: path) else { return .error("'\(shown)' cannot be read.") }
        if data.prefix(8_192).contains(0) { return .error("'\(shown)' is a binary file; fs_read reads text only.") }
        let text = String(decoding: data, as: UTF8.self)
        guard let start = arguments["startLine"]?.intValue else { return ToolOutput(text) }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let count = arguments["lineCount"]?.intValue ?? lines.count
        guard start <= lines.count else { return .error("'\(shown)' has only \(lines.count) lines.") }
        return ToolOutput(lines[(start - 1)..<min(lines.count, start - 1 + count)].joined(separator: "\n"))
    }
}

/// `fs_write`: replaces (or creates) a file, atomically. Doing it twice is the same as once.
public struct WriteFileTool: Tool {
    public let workspace: Workspace
    public let limits: FileToolLimits
    public let name = "fs_write"
    public let description = "Create or overwrite a text file in the workspace with the given content. Creates parent directories."
    public let effect = ToolEffect.idempotent
    public let parameters: JSONSchema = .object([
        .init("path", .string("Path relative to the workspace root.", minLength: 1)),
        .init("content", .string("The file's complete new content.")),
    ])

    public init(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) {
        self.workspace = workspace
        self.limits = limits
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        let target: WriteTarget
        switch try WriteTarget.prepare(arguments, in: workspace, limits: limits, tool: name) {
        case .success(let ready): target = ready
        case .failure(let refusal): return refusal.output
        }
        try target.content.write(to: target.url, options: .atomic)
        return ToolOutput("Wrote \(target.content.count) bytes to \(target.shown).")
    }
}

/// `fs_append`: adds text to the end of a file. Not idempotent: after a crash it is never re-run by itself.
public struct AppendFileTool: Tool {
    public let workspace: Workspace
    public let limits: FileToolLimits
    public let name = "fs_append"
    public let description = "Append text to the end of a file in the workspace, creating it if needed."
    public let effect = ToolEffect.sideEffecting
    public let parameters: JSONSchema = .object([
        .init("path", .string("Path relative to the workspace root.", minLength: 1)),
        .init("content", .string("The text to append.")),
    ])

    public init(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) {
        self.workspace = workspace
        self.limits = limits
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        let target: WriteTarget
        switch try WriteTarget.prepare(arguments, in: workspace, limits: limits, tool: name) {
        case .success(let ready): target = ready
        case .failure(let refusal): return refusal.output
        }
        if !FileManager.default.fileExists(atPath: target.url.path) {
            _ = FileManager.default.createFile(atPath: target.url.path, contents: nil)
        }
        let handle = try FileHandle(forWritingTo: target.url)
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: target.content)
        return ToolOutput("Appended \(target.content.count) bytes to \(target.shown).")
    }
}

/// A checked destination for `fs_write` and `fs_append`: inside the workspace, not a directory,
/// content within the size cap, parent directories created.
struct WriteTarget {
    struct Refusal: Error {
        var output: ToolOutput
    }

    var url: URL
    var content: Data
    /// The path as the model should see it.
    var shown: String

    static func prepare(
        _ arguments: JSONValue,
        in workspace: Workspace,
        limits: FileToolLimits,
        tool: String
    ) throws -> Result<WriteTarget, Refusal> {
        let path = try workspace.resolve(arguments["path"]?.stringValue ?? "")
        let content = Data((arguments["content"]?.stringValue ?? "").utf8)
        let shown = workspace.relative(path)
        guard content.count <= limits.maxWriteBytes else {
            return .failure(
                Refusal(output: .error("The content has \(content.count) bytes; \(tool) writes at most \(limits.maxWriteBytes).")))
        }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            return .failure(Refusal(output: .error("'\(shown)' is a directory.")))
        }
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        // Re-check after creating directories: a symlink raced into the path must not lead outside.
        _ = try workspace.resolve(shown)
        return .success(WriteTarget(url: url, content: content, shown: shown))
    }
}

/// `fs_list`: the entries of a directory, optionally recursive.
public struct ListFilesTool: Tool {
    public let workspace: Workspace
    public let limits: FileToolLimits
    public let name = "fs_list"
    public let description = "List files and directories under a path in the workspace (\".\" for the root), with sizes."
    public let effect = ToolEffect.readOnly
    public let parameters: JSONSchema = .object(
        [
            .init("path", .string("Directory relative to the workspace root.")),
            .init("recursive", .boolean("Also list subdirectories' contents.")),
        ],
        required: ["path"]
    )

    public init(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) {
        self.workspace = workspace
        self.limits = limits
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        let path = try workspace.resolve(arguments["path"]?.stringValue ?? ".")
        let recursive = arguments["recursive"]?.boolValue ?? false
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            return .error("'\(workspace.relative(path))' is not a directory.")
        }
        var lines: [String] = []
        var truncated = false
        func visit(_ directory: String, prefix: String) throws {
            let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
            for name in names {
                guard lines.count < limits.maxListEntries else {
                    truncated = true
                    return
                }
                let full = directory + "/" + name
                let attributes = try? FileManager.default.attributesOfItem(atPath: full)
                let type = attributes?[.type] as? FileAttributeType
                switch type {
                case .typeDirectory?:
                    lines.append("\(prefix)\(name)/")
                    if recursive { try visit(full, prefix: prefix + name + "/") }
                case .typeSymbolicLink?:
                    lines.append("\(prefix)\(name) -> (symlink)")
                default:
                    let size = (attributes?[.size] as? NSNumber)?.intValue ?? 0
                    lines.append("\(prefix)\(name) (\(size) bytes)")
                }
            }
        }
        try visit(path, prefix: "")
        if lines.isEmpty { return ToolOutput("(empty directory)") }
        if truncated { lines.append("…(stopped at \(limits.maxListEntries) entries)") }
        return ToolOutput(lines.joined(separator: "\n"))
    }
}
