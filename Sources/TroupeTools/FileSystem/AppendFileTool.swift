import Foundation
public import TroupeCore

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
        try WriteTarget.write(arguments, in: workspace, limits: limits, tool: name) { target in
            try target.directory.append(target.content, to: target.name)
            return ToolOutput("Appended \(target.content.count) bytes to \(target.shown).")
        }
    }
}
