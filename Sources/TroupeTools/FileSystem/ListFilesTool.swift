import Foundation
public import TroupeCore

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

    /// How deep a recursive listing goes.
    public static let maxDepth = 32

    public init(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) {
        self.workspace = workspace
        self.limits = limits
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        let requested = arguments["path"]?.stringValue ?? "."
        let recursive = arguments["recursive"]?.boolValue ?? false
        // Listed from the opened (and checked) descriptor, subfolders through their parent's: a
        // folder swapped for a symlink after the check cannot lead the listing out.
        let opened: Result<JailedFile?, TroupeError> = Result { () throws(TroupeError) in
            try JailedFile.directory(requested, in: workspace, create: false)
        }
        if case .failure(let error) = opened, error.code != .invalidInput { throw error }
        guard case .success(let found) = opened, let start = found else { return .error("'\(requested)' is not a directory.") }
        var lines: [String] = []
        var truncated = false
        var tooDeep = false
        var unopened: [String] = []
        func visit(_ directory: JailedFile, prefix: String, depth: Int) throws {
            for entry in try directory.entries() {
                guard lines.count < limits.maxListEntries else {
                    truncated = true
                    return
                }
                switch entry.type {
                case S_IFDIR:
                    lines.append("\(prefix)\(entry.name)/")
                    guard recursive else { continue }
                    // Each level holds its folder open while it descends: a bound on depth is a
                    // bound on descriptors (a path of a thousand folders must not exhaust them).
                    guard depth < Self.maxDepth else {
                        tooDeep = true
                        continue
                    }
                    if let child = try directory.subdirectory(entry.name, in: workspace) {
                        try visit(child, prefix: prefix + entry.name + "/", depth: depth + 1)
                    } else {
                        unopened.append(prefix + entry.name + "/")
                    }
                case S_IFLNK:
                    lines.append("\(prefix)\(entry.name) -> (symlink)")
                default:
                    lines.append("\(prefix)\(entry.name) (\(entry.size) bytes)")
                }
            }
        }
        try visit(start, prefix: "", depth: 1)
        if lines.isEmpty { return ToolOutput("(empty directory)") }
        if truncated { lines.append("…(stopped at \(limits.maxListEntries) entries)") }
        if tooDeep { lines.append("…(folders deeper than \(Self.maxDepth) levels are not listed; list them by path)") }
        if !unopened.isEmpty { lines.append("…(could not open \(unopened.prefix(5).joined(separator: ", ")))") }
        return ToolOutput(lines.joined(separator: "\n"))
    }
}
