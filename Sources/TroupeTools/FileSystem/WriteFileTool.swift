import Foundation
public import TroupeCore

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
        try WriteTarget.write(arguments, in: workspace, limits: limits, tool: name) { target in
            try target.directory.replace(target.name, with: target.content)
            return ToolOutput("Wrote \(target.content.count) bytes to \(target.shown).")
        }
    }
}
