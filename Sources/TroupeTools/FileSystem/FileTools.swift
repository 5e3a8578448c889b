import Foundation
public import TroupeCore

/// The file tools (`fs_read`, `fs_write`, `fs_append`, `fs_list`, `fs_search`, `fs_patch`), all
/// jailed to one ``Workspace``.
public enum FileTools {
    /// Every file tool, bound to `workspace`.
    public static func all(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) -> [any Tool] {
        [
            ReadFileTool(workspace: workspace, limits: limits),
            WriteFileTool(workspace: workspace, limits: limits),
            AppendFileTool(workspace: workspace, limits: limits),
            ListFilesTool(workspace: workspace, limits: limits),
            SearchFilesTool(workspace: workspace, limits: limits),
            PatchFileTool(workspace: workspace, limits: limits),
        ]
    }
}

/// Size caps of the file tools, and the paths they never write.
public struct FileToolLimits: Sendable, Hashable {
    /// The largest file `fs_read` reads, in bytes.
    public var maxReadBytes: Int
    /// The largest content `fs_write`/`fs_append` accept, in bytes.
    public var maxWriteBytes: Int
    /// The most entries `fs_list` returns.
    public var maxListEntries: Int
    /// The most matching lines `fs_search` returns.
    public var maxSearchResults: Int
    /// The most files one `fs_search` reads.
    public var maxSearchFiles: Int
    /// How long one `fs_search` may take.
    public var searchTimeBudget: Duration
    /// What `fs_write`, `fs_append` and `fs_patch` refuse to write.
    public var protectedPaths: ProtectedPaths

    public init(
        maxReadBytes: Int = 1 << 20,
        maxWriteBytes: Int = 1 << 20,
        maxListEntries: Int = 1_000,
        maxSearchResults: Int = 200,
        maxSearchFiles: Int = 10_000,
        searchTimeBudget: Duration = .seconds(10),
        protectedPaths: ProtectedPaths = ProtectedPaths()
    ) {
        self.maxReadBytes = maxReadBytes
        self.maxWriteBytes = maxWriteBytes
        self.maxListEntries = maxListEntries
        self.maxSearchResults = maxSearchResults
        self.maxSearchFiles = maxSearchFiles
        self.searchTimeBudget = searchTimeBudget
        self.protectedPaths = protectedPaths
    }
}
