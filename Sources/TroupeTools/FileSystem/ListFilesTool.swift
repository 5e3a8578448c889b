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
