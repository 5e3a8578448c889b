import Foundation
import TroupeCore

/// A checked destination for `fs_write` and `fs_append`: inside the workspace, not a directory,
/// content within the size cap, its directory created and opened (and checked) as a descriptor.
struct WriteTarget {
    /// The directory the file goes in.
    var directory: JailedFile
    /// The file's name in it.
    var name: String
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
        let requested = arguments["path"]?.stringValue ?? ""
        let path = try workspace.resolve(requested)
        let content = Data((arguments["content"]?.stringValue ?? "").utf8)
        let shown = workspace.relative(path)
        if let reason = limits.protectedPaths.refusal(for: path, in: workspace) {
            return .error("'\(shown)' may not be written: \(reason). Nothing was changed.")
        }
        guard content.count <= limits.maxWriteBytes else {
            return .error("The content has \(content.count) bytes; \(tool) writes at most \(limits.maxWriteBytes).")
        }
        var isDirectory: ObjCBool = false
        if path == workspace.root || (FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue) {
            return .error("'\(shown)' is a directory.")
        }
        guard !requested.hasSuffix("/") else { return .error("'\(requested)' names a directory, not a file.") }
        let url = URL(fileURLWithPath: path)
        guard
            let directory = try JailedFile.directory(
                workspace.relative(url.deletingLastPathComponent().path), in: workspace, create: true)
        else { return .error("Could not create the directory of '\(shown)'.") }
        // Again where the folder really is, now that it is open: a parent swapped for a symlink
        // (to `.git`, say) since the path was checked is seen here.
        let opened = directory.path + "/" + url.lastPathComponent
        if let reason = limits.protectedPaths.refusal(for: opened, in: workspace) {
            return .error("'\(workspace.relative(opened))' may not be written: \(reason). Nothing was changed.")
        }
        return try body(WriteTarget(directory: directory, name: url.lastPathComponent, content: content, shown: shown))
    }
}
