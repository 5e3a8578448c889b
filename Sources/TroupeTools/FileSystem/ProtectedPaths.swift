import Foundation

/// Paths the file tools never write: Troupe's own files (its settings, its store), and places
/// where a written file makes something else run code later (`.git`: `core.fsmonitor` in
/// `.git/config` runs on the next `git status`, and `.git/hooks/*` on the next commit).
///
/// A model steered by a prompt injection (in a fetched page, a file it read) would otherwise write
/// `troupe.yaml` — a new MCP server `sh -c …`, a model endpoint that receives the user's API key —
/// and the user's next `troupe run` would obey it.
public struct ProtectedPaths: Sendable, Hashable {
    /// Patterns relative to the workspace root: `NAME` or `a/b` is that path and everything below
    /// it; `**/NAME` is any entry called `NAME`, at any depth, and everything below it. Compared
    /// without regard to case (a case-insensitive file system maps `.GIT` to `.git`).
    public var patterns: [String]
    /// Absolute paths, whatever the workspace: the settings file in use, the store's files.
    public var files: Set<String>

    /// `troupe.yaml` at the root and every `.git` (folder, or the file of a worktree or submodule).
    public static let defaultPatterns = ["troupe.yaml", "**/.git"]

    public init(patterns: [String] = ProtectedPaths.defaultPatterns, files: Set<String> = []) {
        self.patterns = patterns
        self.files = files
    }

    /// Why `absolute` (a resolved path inside `workspace`) may not be written, or `nil`.
    func refusal(for absolute: String, in workspace: Workspace) -> String? {
        for file in files where absolute == file || absolute.hasPrefix(file + "-") {
            return "it is one of Troupe's own files (\(file)); the model may not change Troupe's settings or store"
        }
        let relative = workspace.relative(absolute)
        guard relative != absolute else { return nil }
        let components = relative.split(separator: "/").map { $0.lowercased() }
        for pattern in patterns {
            let anywhere = pattern.hasPrefix("**/")
            let parts = (anywhere ? pattern.dropFirst(3) : Substring(pattern)).split(separator: "/").map { $0.lowercased() }
            guard !parts.isEmpty else { continue }
            let starts = anywhere ? Array(components.indices) : [0]
            for start in starts where start + parts.count <= components.count {
                if Array(components[start..<(start + parts.count)]) == parts {
                    return "it is protected (tools.fs.protectedPaths: \(pattern)): writing it could make Troupe or git run code later"
                }
            }
        }
        return nil
    }
}
