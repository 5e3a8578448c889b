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
    /// Absolute paths, whatever the workspace: the settings file in use, the store's files
    /// (with their `-wal`, `-shm` and `-journal` companions). Also matched as the same file on
    /// disk (device and inode), so a hard link or another spelling of the path does not get by.
    public var files: Set<String>

    /// Troupe's settings (`troupe.yaml` at any depth: a later `troupe run` may be started from that
    /// folder), every `.git` (folder, or the file of a worktree or submodule), and the files git
    /// hooks managers and shells run: `.githooks` and `.husky` (common `core.hooksPath`s),
    /// `.pre-commit-config.yaml` (its `repo: local` hooks run commands), `.envrc` (direnv runs it
    /// on `cd`).
    public static let defaultPatterns = [
        "**/troupe.yaml", "**/.git", "**/.githooks", "**/.husky", "**/.pre-commit-config.yaml", "**/.envrc",
    ]

    public init(patterns: [String] = ProtectedPaths.defaultPatterns, files: Set<String> = []) {
        self.patterns = patterns
        self.files = files
    }

    /// Why a pattern cannot be used, or `nil`: relative paths without `.`/`..`, and no wildcard
    /// but a leading `**/`.
    public static func problem(with pattern: String) -> String? {
        let body = pattern.hasPrefix("**/") ? String(pattern.dropFirst(3)) : pattern
        let parts = body.split(separator: "/", omittingEmptySubsequences: false)
        if body.isEmpty || pattern.hasPrefix("/") || parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) {
            return "'\(pattern)' is not a path relative to the workspace root (such as .env, secrets/, **/.env)"
        }
        if body.contains("*") || body.contains("?") || body.contains("[") {
            return "'\(pattern)' has a wildcard; only a leading **/ (at any depth) is understood"
        }
        return nil
    }

    /// Why `absolute` (a resolved path inside `workspace`) may not be written, or `nil`.
    func refusal(for absolute: String, in workspace: Workspace) -> String? {
        if isOneOfTheFiles(absolute) {
            return "it is one of Troupe's own files (its settings or its store); the model may not change them"
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
                    return
                        "it is protected (tools.fs.protectedPaths: \(pattern)): writing it could make Troupe, git or a shell run code later"
                }
            }
        }
        return nil
    }

    /// Whether `absolute` is one of ``files`` (or a companion of one): by path, without regard to
    /// case, and by device and inode.
    private func isOneOfTheFiles(_ absolute: String) -> Bool {
        guard !files.isEmpty else { return false }
        let path = absolute.lowercased()
        let suffixes = ["", "-wal", "-shm", "-journal"]
        for file in files {
            let base = file.lowercased()
            if suffixes.contains(where: { path == base + $0 }) { return true }
        }
        var target = stat()
        guard stat(absolute, &target) == 0 else { return false }
        for file in files {
            for suffix in suffixes {
                var protected = stat()
                if stat(file + suffix, &protected) == 0, protected.st_dev == target.st_dev, protected.st_ino == target.st_ino {
                    return true
                }
            }
        }
        return false
    }
}
