import Foundation
import TroupeCore

/// A checked destination for `fs_write` and `fs_append`: inside the workspace, not a directory,
/// content within the size cap, parent directories created.
struct WriteTarget {
    var url: URL
    var content: Data
    /// The path as the model should see it.
    var shown: String

    /// Checks the destination and content of a write; runs `body` with them when acceptable, and
    /// otherwise returns the refusal the model should read.
    static func write(
        _ arguments: JSONValue,
        in workspace: Workspace,
        limits: FileToolLimits,
        tool: String,
        _ body: (WriteTarget) throws -> ToolOutput
    ) throws -> ToolOutput {
        let path = try workspace.resolve(arguments["path"]?.stringValue ?? "")
        let content = Data((arguments["content"]?.stringValue ?? "").utf8)
        let shown = workspace.relative(path)
        guard content.count <= limits.maxWriteBytes else {
            return .error("The content has \(content.count) bytes; \(tool) writes at most \(limits.maxWriteBytes).")
        }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            return .error("'\(shown)' is a directory.")
        }
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        // Re-check after creating directories: a symlink raced into the path must not lead outside.
        _ = try workspace.resolve(shown)
        return try body(WriteTarget(url: url, content: content, shown: shown))
    }
}
