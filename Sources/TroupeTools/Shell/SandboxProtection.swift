import CTroupeSystem
import Foundation
import TroupeCore

#if canImport(Glibc)
    import Glibc
#endif

/// What keeps a sandboxed program from changing the paths that would run code later, outside
/// the sandbox (git's hooks and configuration, pre-commit and lefthook settings, `.envrc`), or
/// that are Troupe's own (the settings file, the store), where it could otherwise write them.
///
/// - A protected path directly in a writable folder is bound read-only, with the `-wal`, `-shm`
///   and `-journal` beside it when they exist (a store's; SQLite keeps them while it is open).
/// - One deeper down has its topmost folder below the writable one bound read-only as a whole:
///   the file cannot be swapped by renaming its folder, and its companions are covered.
/// - A protected name git would read that does not exist at the workspace's top (`.git`,
///   `.githooks`, `.husky`, `.pre-commit-config.yaml`, lefthook's files) is made as an empty
///   placeholder, marked with the extended attribute `user.troupe.placeholder`, and bound
///   read-only, so that the program cannot create it. (`.envrc` and `troupe.yaml` are not held
///   when missing: direnv runs only an `.envrc` that `direnv allow` approved, and Troupe does not
///   read a settings file inside a run's workspace by itself.)
/// - A protected name that is a symbolic link is bound where it leads when that is inside a
///   writable folder, and refused otherwise (binding it would follow it out).
///
/// Each call holds a shared `flock` on the workspace while its program runs; at the end, a call
/// that can take it exclusively — no other call in that workspace is running, in any process —
/// removes the placeholders that are still marked and empty (its own, and those a Troupe that
/// died left).
struct SandboxProtection: Sendable {
    /// Read-only binds, to add after the writable ones.
    var binds: [(source: String, destination: String)] = []
    /// The workspace's descriptor, locked shared; -1 without one.
    private(set) var lock: Int32 = -1
    private(set) var workspace: String?
    /// Placeholders this call made that could not be marked (a file system without extended
    /// attributes): removed by this call's ``end()`` like marked ones.
    private(set) var unmarked: [String] = []

    /// The names at a workspace's top that stay read-only.
    static let workspaceNames = [
        ".git", ".githooks", ".husky", ".envrc", ".pre-commit-config.yaml", "lefthook.yml", ".lefthook.yml", "troupe.yaml",
    ]
    /// Of them, those held by a placeholder when missing, and whether it is a folder.
    static let placeholderNames: [String: Bool] = [
        ".git": true, ".githooks": true, ".husky": true, ".pre-commit-config.yaml": false, "lefthook.yml": false,
        ".lefthook.yml": false,
    ]
    static let marker = "user.troupe.placeholder"

    /// The protection of `protectedPaths` (and, with a workspace, its ``workspaceNames``) inside
    /// `workspace` and `writablePaths`. Throws when a protected symbolic link leads out.
    static func make(protectedPaths: [String], workspace: String?, writablePaths: [String]) throws(TroupeError) -> SandboxProtection {
        var protection = SandboxProtection()
        protection.workspace = workspace
        if let workspace { protection.lock = lockShared(workspace) }
        do {
            let roots = [workspace].compactMap { $0 } + writablePaths
            let paths = protectedPaths + (workspace.map { root in workspaceNames.map { root + "/" + $0 } } ?? [])
            var seen = Set<String>()
            for path in paths {
                guard let root = roots.first(where: { path.hasPrefix($0 + "/") }), seen.insert(path).inserted else { continue }
                let parent = (path as NSString).deletingLastPathComponent
                if parent != root {
                    let top = root + "/" + path.dropFirst(root.count + 1).split(separator: "/")[0]
                    if seen.insert(top).inserted { try protection.bind(top, within: roots) }
                    continue
                }
                let name = (path as NSString).lastPathComponent
                if root == workspace, let isFolder = placeholderNames[name], !makePlaceholder(path, folder: isFolder) {
                    protection.unmarked.append(path)
                }
                try protection.bind(path, within: roots)
                guard !workspaceNames.contains(name) else { continue }
                for companion in ["-wal", "-shm", "-journal"] { try protection.bind(path + companion, within: roots) }
            }
        } catch {
            protection.end()
            throw error
        }
        return protection
    }

    /// Binds `path` read-only if something is there; a symbolic link is bound where it leads
    /// when that is inside one of `roots`, else refused.
    private mutating func bind(_ path: String, within roots: [String]) throws(TroupeError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFLNK else {
            binds.append((path, path))
            return
        }
        let target = realpath(path, nil).map { pointer in
            defer { free(pointer) }
            return String(cString: pointer)
        }
        guard let target, roots.contains(where: { target.hasPrefix($0 + "/") }) else {
            throw TroupeError(
                .toolFailed,
                "'\(path)' is a symbolic link that leads out of the workspace, and it is one of the paths commands may not change "
                    + "(git's, direnv's, Troupe's settings or store): shell_run does not run until it is a real file or folder, or "
                    + "leads inside the workspace.")
        }
        binds.append((target, target))
    }

    /// Makes a marked, empty placeholder at `path` if nothing is there and it can (a read-only
    /// workspace cannot be written by the program either); false when it made one it could not mark.
    private static func makePlaceholder(_ path: String, folder: Bool) -> Bool {
        if folder {
            guard mkdir(path, 0o755) == 0 else { return true }
        } else {
            let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard descriptor >= 0 else { return true }
            close(descriptor)
        }
        return troupe_mark(path, marker) == 0
    }

    /// A shared lock on the workspace folder, waited for up to 2 s (a program in another
    /// sandbox could hold it exclusively; then no one can remove placeholders, so going on
    /// without it is safe).
    private static func lockShared(_ workspace: String) -> Int32 {
        let descriptor = open(workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return -1 }
        for _ in 0..<200 {
            if flock(descriptor, LOCK_SH | LOCK_NB) == 0 { return descriptor }
            usleep(10_000)
        }
        return descriptor
    }

    /// Ends the call's hold on the workspace; the last call running there removes the marked,
    /// empty placeholders.
    func end() {
        guard lock >= 0 else { return }
        defer { close(lock) }
        guard let workspace, flock(lock, LOCK_EX | LOCK_NB) == 0 else { return }
        for path in Self.placeholderNames.keys.map({ workspace + "/" + $0 }) {
            guard troupe_is_marked(path, Self.marker) == 1 || unmarked.contains(path) else { continue }
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            if info.st_mode & S_IFMT == S_IFDIR {
                rmdir(path)  // only when empty
            } else if info.st_mode & S_IFMT == S_IFREG, info.st_size == 0 {
                unlink(path)
            }
        }
    }
}
