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
