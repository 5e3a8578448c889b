import Foundation
public import TroupeCore

/// A directory that file tools are jailed to.
///
/// Paths from the model are resolved *after* following symlinks and must stay inside the root:
/// `..`, absolute paths elsewhere, symlinks pointing out, NUL bytes and over-long names are refused.
public struct Workspace: Sendable, Hashable {
    /// The root, with symlinks resolved.
    public let root: String

    /// Opens `path` as a workspace; it must be an existing directory.
    public init(_ path: String) throws(TroupeError) {
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        guard let resolved = Self.realPath(absolute) else {
            throw TroupeError(.invalidInput, "The workspace '\(path)' does not exist. Create it or pass another --workspace.")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: resolved, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TroupeError(.invalidInput, "The workspace '\(path)' is not a directory.")
        }
        root = resolved
    }

    /// The real absolute path for `path` (relative to the root), checked to be inside the root.
    /// The file itself need not exist (for writes); its nearest existing ancestor is resolved.
    public func resolve(_ path: String) throws(TroupeError) -> String {
        guard !path.contains("\0") else { throw denied(path, "it contains a NUL byte") }
        guard path.utf8.count <= 4_096 else { throw denied(String(path.prefix(80)) + "…", "it is longer than 4096 bytes") }
        let components = path.split(separator: "/", omittingEmptySubsequences: true)
        guard !components.contains(where: { $0.utf8.count > 255 }) else { throw denied(path, "a name in it is longer than 255 bytes") }

        let candidate: String
        if path.hasPrefix("/") {
            candidate = URL(fileURLWithPath: path).standardizedFileURL.path
        } else {
            candidate = URL(fileURLWithPath: root).appendingPathComponent(path.isEmpty ? "." : path).standardizedFileURL.path
        }
        // Resolve the longest existing prefix (following every symlink in it), then re-append the rest.
        var existing = candidate
        var rest: [String] = []
        var resolved = Self.realPath(existing)
        while resolved == nil {
            let url = URL(fileURLWithPath: existing)
            rest.insert(url.lastPathComponent, at: 0)
            let parent = url.deletingLastPathComponent().path
            guard parent != existing else { break }
            existing = parent
            resolved = Self.realPath(existing)
        }
        guard let base = resolved else { throw denied(path, "it cannot be resolved") }
        let full = rest.isEmpty ? base : base + "/" + rest.joined(separator: "/")
        guard contains(full) else { throw denied(path, "it is outside the workspace") }
        return full
    }

    /// Whether the real path `absolute` is the root or below it. Compared byte for byte, as the
    /// file system does: Swift's `String` comparison treats canonically equivalent spellings
    /// (`é` and `e` + U+0301) as equal, and a file system does not.
    func contains(_ absolute: String) -> Bool {
        let path = Array(absolute.utf8)
        let base = Array(root.utf8)
        if path == base { return true }
        let prefix = base == [0x2F] ? base : base + [0x2F]
        return path.count > prefix.count && path.starts(with: prefix)
    }

    /// `absolute` relative to the root, for messages to the model.
    public func relative(_ absolute: String) -> String {
        let path = Array(absolute.utf8)
        let base = Array(root.utf8)
        if path == base { return "." }
        let prefix = base == [0x2F] ? base : base + [0x2F]
        guard path.count > prefix.count, path.starts(with: prefix) else { return absolute }
        return String(decoding: path[prefix.count...], as: UTF8.self)
    }

    func denied(_ path: String, _ reason: String) -> TroupeError {
        TroupeError(.accessDenied, "Access to '\(path)' is denied: \(reason). Use paths inside the workspace.", details: ["path": path])
    }

    /// `path` with every symlink resolved (`realpath`), or `nil` if it does not exist.
    package static func realPath(_ path: String) -> String? {
        guard let pointer = realpath(path, nil) else { return nil }
        defer { free(pointer) }
        return String(cString: pointer)
    }
}
