import Foundation
import TroupeCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A file or directory opened inside a ``Workspace``: the descriptor is checked after opening, so a
/// symlink swapped into the path between the check of the path and the open (a race a hostile
/// process or an earlier tool call can set up) cannot lead outside the workspace.
final class JailedFile {
    let descriptor: Int32
    /// The opened file's real path.
    let path: String
    /// The path as the model should see it.
    let shown: String
    let isDirectory: Bool
    let isRegularFile: Bool
    let size: Int
    let mode: mode_t

    private init(descriptor: Int32, path: String, shown: String, status: stat) {
        self.descriptor = descriptor
        self.path = path
        self.shown = shown
        self.isDirectory = (status.st_mode & S_IFMT) == S_IFDIR
        self.isRegularFile = (status.st_mode & S_IFMT) == S_IFREG
        self.size = Int(status.st_size)
        self.mode = status.st_mode & 0o7777
    }

    deinit { close(descriptor) }

    /// Opens `path` (relative to the workspace root) read-only; `nil` if nothing is there.
    static func opening(_ path: String, in workspace: Workspace) throws(TroupeError) -> JailedFile? {
        try opening(resolved: workspace.resolve(path), requested: path, in: workspace)
    }

    /// Opens a path `resolve` returned. Whatever changed on disk since, the descriptor is checked.
    static func opening(resolved: String, requested path: String, in workspace: Workspace) throws(TroupeError) -> JailedFile? {
        // O_NONBLOCK: opening a FIFO someone planted must not hang the call.
        let descriptor = open(resolved, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            if errno == ELOOP { throw workspace.denied(path, "it is a symbolic link") }
            throw TroupeError(.toolFailed, "Could not open '\(workspace.relative(resolved))': \(String(cString: strerror(errno))).")
        }
        return try checked(descriptor, path: path, in: workspace)
    }

    /// The directory `path`, created (with its parents) if `create` and missing.
    static func directory(_ path: String, in workspace: Workspace, create: Bool) throws(TroupeError) -> JailedFile? {
        let resolved = try workspace.resolve(path)
        if create { try makeDirectories(workspace.relative(resolved), in: workspace) }
        let descriptor = open(resolved, O_RDONLY | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            if errno == ENOTDIR { throw TroupeError(.invalidInput, "'\(workspace.relative(resolved))' is not a directory.") }
            throw workspace.denied(path, "it cannot be opened as a directory")
        }
        return try checked(descriptor, path: path, in: workspace)
    }

    /// One entry of a directory, as `lstat` sees it (a symlink is a symlink, never what it points to).
    struct Entry {
        var name: String
        var type: mode_t
        var size: Int
    }

    /// The entries of this directory, read from its descriptor (not from its path, which may have
    /// been changed since it was checked), sorted by name; `.` and `..` left out.
    func entries() throws(TroupeError) -> [Entry] {
        let copy = dup(descriptor)
        guard copy >= 0, let stream = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            throw TroupeError(.toolFailed, "Could not list '\(shown)': \(String(cString: strerror(errno))).")
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var entries: [Entry] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name != ".", name != ".." else { continue }
            var status = stat()
            guard fstatat(descriptor, name, &status, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            entries.append(Entry(name: name, type: status.st_mode & S_IFMT, size: Int(status.st_size)))
        }
        return entries.sorted { $0.name < $1.name }
    }

    /// The subdirectory `name` of this directory, opened through this one's descriptor without
    /// following a symlink, and checked like any other; `nil` if it is not a directory (any more).
    func subdirectory(_ name: String, in workspace: Workspace) throws(TroupeError) -> JailedFile? {
        let child = openat(descriptor, name, O_RDONLY | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW)
        guard child >= 0 else { return nil }
        let relative = shown == "." ? name : shown + "/" + name
        return try Self.checked(child, path: relative, in: workspace)
    }

    /// Creates the folders of `relative` one at a time, each inside the descriptor of its parent
    /// and never through a symlink, so a link swapped in meanwhile cannot make one appear outside.
    private static func makeDirectories(_ relative: String, in workspace: Workspace) throws(TroupeError) {
        guard relative != "." else { return }
        var current = open(workspace.root, O_RDONLY | O_CLOEXEC | O_DIRECTORY)
        guard current >= 0 else { throw TroupeError(.toolFailed, "Could not open the workspace '\(workspace.root)'.") }
        defer { close(current) }
        for component in relative.split(separator: "/") {
            let name = String(component)
            if mkdirat(current, name, 0o755) != 0 && errno != EEXIST {
                throw TroupeError(.toolFailed, "Could not create the directory '\(relative)': \(String(cString: strerror(errno))).")
            }
            let next = openat(current, name, O_RDONLY | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW)
            guard next >= 0 else {
                if errno == ELOOP { throw workspace.denied(relative, "'\(name)' in it is a symbolic link") }
                throw TroupeError(.invalidInput, "'\(name)' in '\(relative)' is not a directory.")
            }
            close(current)
            current = next
        }
    }

    /// Checks where an opened descriptor really is; closes it and refuses if outside the root.
    private static func checked(_ descriptor: Int32, path: String, in workspace: Workspace) throws(TroupeError) -> JailedFile {
        guard let real = realPath(of: descriptor), workspace.contains(real) else {
            close(descriptor)
            throw workspace.denied(path, "it leads outside the workspace")
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            close(descriptor)
            throw TroupeError(.toolFailed, "Could not inspect '\(workspace.relative(real))'.")
        }
        return JailedFile(descriptor: descriptor, path: real, shown: workspace.relative(real), status: status)
    }

    /// Where a descriptor points, from the kernel (not from the path used to open it).
    static func realPath(of descriptor: Int32) -> String? {
        #if os(Linux)
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let count = readlink("/proc/self/fd/\(descriptor)", &buffer, buffer.count - 1)
            guard count > 0 else { return nil }
            return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #else
            var buffer = [CChar](repeating: 0, count: Int(MAXPATHLEN))
            guard fcntl(descriptor, F_GETPATH, &buffer) != -1 else { return nil }
            return String(cString: buffer)
        #endif
    }

    /// Reads the whole file, at most `limit` bytes (a file growing meanwhile is cut at `limit`).
    func readAll(limit: Int) throws(TroupeError) -> Data {
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while data.count < limit {
            let count = read(descriptor, &chunk, min(chunk.count, limit - data.count))
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { throw TroupeError(.toolFailed, "'\(shown)' is not a regular file that can be read.") }
                throw TroupeError(.toolFailed, "Could not read '\(shown)': \(String(cString: strerror(errno))).")
            }
            if count == 0 { break }
            data.append(contentsOf: chunk[..<count])
        }
        return data
    }

    /// The file as UTF-8 text (at most `limit` bytes), or `nil` if it is binary: a NUL byte in its
    /// first 8 KiB, or bytes that are not UTF-8.
    func readText(limit: Int) throws(TroupeError) -> String? {
        let data = try readAll(limit: limit)
        guard !data.prefix(8_192).contains(0) else { return nil }
        return String(validating: data, as: UTF8.self)
    }

    /// Replaces `name` in this directory with `content`, atomically: a temporary file in the same
    /// directory, flushed, then renamed over the target. The rename replaces a symlink at `name`
    /// itself, never the file it points to.
    func replace(_ name: String, with content: Data, mode defaultMode: mode_t = 0o644) throws(TroupeError) {
        var existing = stat()
        let exists = fstatat(descriptor, name, &existing, AT_SYMLINK_NOFOLLOW) == 0
        if exists, (existing.st_mode & S_IFMT) == S_IFDIR {
            throw TroupeError(.invalidInput, "'\(shown == "." ? name : shown + "/" + name)' is a directory.")
        }
        // The file's permissions are kept, but never an executable bit: a model that overwrites a
        // script (or a git hook) must not leave something that runs.
        let mode = (exists && (existing.st_mode & S_IFMT) == S_IFREG ? existing.st_mode & 0o777 : defaultMode) & 0o666
        let temporary = ".\(name.prefix(100)).troupe-\(UUID().uuidString.prefix(8)).tmp"
        let file = openat(descriptor, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard file >= 0 else { throw TroupeError(.toolFailed, "Could not write in '\(shown)': \(String(cString: strerror(errno))).") }
        do throws(TroupeError) {
            try Self.writeAll(content, to: file, shown: name)
            guard fsync(file) == 0 else { throw TroupeError(.toolFailed, "Could not flush '\(name)' to disk.") }
            close(file)
            guard renameat(descriptor, temporary, descriptor, name) == 0 else {
                throw TroupeError(.toolFailed, "Could not replace '\(name)': \(String(cString: strerror(errno))).")
            }
        } catch {
            close(file)
            unlinkat(descriptor, temporary, 0)
            throw error
        }
    }

    /// Appends `content` to `name` in this directory, creating it; refuses a symlink at `name`.
    func append(_ content: Data, to name: String) throws(TroupeError) {
        let file = openat(descriptor, name, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0o644)
        guard file >= 0 else {
            if errno == ELOOP { throw TroupeError(.accessDenied, "'\(name)' is a symbolic link; fs_append does not follow links.") }
            if errno == EISDIR { throw TroupeError(.invalidInput, "'\(name)' is a directory.") }
            throw TroupeError(.toolFailed, "Could not open '\(name)': \(String(cString: strerror(errno))).")
        }
        defer { close(file) }
        var status = stat()
        guard fstat(file, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
            throw TroupeError(.invalidInput, "'\(name)' is not a regular file.")
        }
        // Appending to a script must not leave it executable (see `replace`).
        if status.st_mode & 0o111 != 0 { fchmod(file, status.st_mode & 0o666) }
        try Self.writeAll(content, to: file, shown: name)
    }

    private static func writeAll(_ content: Data, to file: Int32, shown: String) throws(TroupeError) {
        var offset = 0
        let failure: Int32? = content.withUnsafeBytes { bytes -> Int32? in
            while offset < bytes.count {
                let count = write(file, bytes.baseAddress! + offset, bytes.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += count
            }
            return nil
        }
        if let failure { throw TroupeError(.toolFailed, "Could not write '\(shown)': \(String(cString: strerror(failure))).") }
    }
}
