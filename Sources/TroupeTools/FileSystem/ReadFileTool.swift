import Foundation
public import TroupeCore

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
        let path = arguments["path"]?.stringValue ?? ""
        guard let file = try JailedFile.opening(path, in: workspace) else {
            return .error("No file '\(path)'. List the directory with fs_list to see what exists.")
        }
        if file.isDirectory { return .error("'\(file.shown)' is a directory; use fs_list.") }
        guard file.isRegularFile else { return .error("'\(file.shown)' is not a regular file.") }
        guard file.size <= limits.maxReadBytes else {
            return .error(
                "'\(file.shown)' has \(file.size) bytes; fs_read reads at most \(limits.maxReadBytes). Use fs_search to find the part you need."
            )
        }
        guard let text = try file.readText(limit: limits.maxReadBytes) else {
            return .error("'\(file.shown)' is a binary file (or not UTF-8 text); fs_read reads text only.")
        }
        guard let start = arguments["startLine"]?.intValue else { return ToolOutput(text) }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let count = arguments["lineCount"]?.intValue ?? lines.count
        guard start <= lines.count else { return .error("'\(file.shown)' has only \(lines.count) lines.") }
        return ToolOutput(lines[(start - 1)..<min(lines.count, start - 1 + count)].joined(separator: "\n"))
    }
}
