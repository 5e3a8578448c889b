import Foundation
public import TroupeCore

/// `fs_search`: lines that contain a text (or match a regular expression) in the workspace's
/// files, as `path:line: text`.
///
/// Symbolic links are not followed, `.git` folders are skipped, binary files and files above the
/// read cap are skipped and counted. The scan stops at `maxSearchResults` matches, at
/// `maxSearchFiles` files or after `searchTimeBudget`, and says so.
public struct SearchFilesTool: Tool {
    public let workspace: Workspace
    public let limits: FileToolLimits
    public let name = "fs_search"
    public let description =
        "Search the workspace's text files for lines containing a text (or matching a regular expression). "
        + "Returns path:line: text for each match."
    public let effect = ToolEffect.readOnly
    public let parameters: JSONSchema = .object(
        [
            .init("pattern", .string("The text to look for (or a regular expression if regex is true).", minLength: 1)),
            .init("path", .string("A directory or file relative to the workspace root (default: the root).")),
            .init("regex", .boolean("Treat the pattern as a regular expression (ICU syntax).")),
            .init("ignoreCase", .boolean("Match regardless of case.")),
            .init("fileSuffix", .string("Only files whose name ends with this, e.g. .swift.")),
        ],
        required: ["pattern"]
    )

    public init(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) {
        self.workspace = workspace
        self.limits = limits
    }

    /// Lines longer than this are not matched against a regular expression (a hostile pattern's
    /// backtracking grows with the line).
    static let maxRegexLineLength = 4_096

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        let pattern = arguments["pattern"]?.stringValue ?? ""
        guard !pattern.isEmpty else { return .error("Give a non-empty pattern.") }
        let ignoreCase = arguments["ignoreCase"]?.boolValue ?? false
        let deadline = ContinuousClock.now.advanced(by: limits.searchTimeBudget)
        let matcher: (Substring) throws(SearchStopped) -> Bool
        if arguments["regex"]?.boolValue ?? false {
            let expression: NSRegularExpression
            do {
                expression = try NSRegularExpression(pattern: pattern, options: ignoreCase ? [.caseInsensitive] : [])
            } catch {
                return .error("The pattern is not a valid regular expression: \(error.localizedDescription)")
            }
            matcher = { line throws(SearchStopped) in
                guard line.utf16.count <= Self.maxRegexLineLength else { return false }
                return try Self.matches(expression, String(line), deadline: deadline)
            }
        } else if ignoreCase {
            matcher = { $0.range(of: pattern, options: .caseInsensitive) != nil }
        } else {
            matcher = { $0.contains(pattern) }
        }
        let suffix = arguments["fileSuffix"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        let start = try workspace.resolve(arguments["path"]?.stringValue ?? ".")

        var search = Search(limits: limits, deadline: deadline)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: start, isDirectory: &isDirectory) else {
            return .error("No file or directory '\(workspace.relative(start))'.")
        }
        if isDirectory.boolValue {
            try search.directory(start, workspace: workspace, suffix: suffix, matcher: matcher)
        } else {
            try search.file(workspace.relative(start), workspace: workspace, matcher: matcher)
        }
        return ToolOutput(search.report(pattern: pattern))
    }

    /// Why a regular expression's match was given up.
    struct SearchStopped: Error {
        var reason: String
    }

    /// Whether `expression` matches in `text`. ICU's matcher backtracks, and a pattern such as
    /// `^(a+)+$` can take longer than the universe on a short line: the match reports its progress
    /// and is stopped at the search's deadline, or when the call is cancelled (its time limit).
    static func matches(_ expression: NSRegularExpression, _ text: String, deadline: ContinuousClock.Instant) throws(SearchStopped) -> Bool
    {
        var found = false
        var stopped: String?
        expression.enumerateMatches(in: text, options: [.reportProgress], range: NSRange(text.startIndex..., in: text)) { match, _, stop in
            if match != nil {
                found = true
                stop.pointee = true
            } else if Task.isCancelled {
                stopped = "the call was cancelled"
                stop.pointee = true
            } else if ContinuousClock.now >= deadline {
                stopped =
                    "the regular expression was still matching one line at the time budget (nested repetition such as (a+)+ backtracks without bound; simplify it)"
                stop.pointee = true
            }
        }
        if let stopped { throw SearchStopped(reason: stopped) }
        return found
    }

    /// One search's progress and findings.
    private struct Search {
        let limits: FileToolLimits
        let deadline: ContinuousClock.Instant
        var lines: [String] = []
        var filesScanned = 0
        var filesWithMatches = 0
        var skippedLarge = 0
        var skippedBinary = 0
        var stopped: String?

        init(limits: FileToolLimits, deadline: ContinuousClock.Instant) {
            self.limits = limits
            self.deadline = deadline
        }

        mutating func directory(_ path: String, workspace: Workspace, suffix: String?, matcher: (Substring) throws(SearchStopped) -> Bool)
            throws
        {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path).sorted()) ?? []
            for name in names where stopped == nil {
                let full = path + "/" + name
                var status = stat()
                guard lstat(full, &status) == 0 else { continue }
                switch status.st_mode & S_IFMT {
                case S_IFDIR:
                    if name != ".git" { try directory(full, workspace: workspace, suffix: suffix, matcher: matcher) }
                case S_IFREG:
                    if let suffix, !name.hasSuffix(suffix) { continue }
                    try file(workspace.relative(full), workspace: workspace, matcher: matcher)
                default:
                    continue  // symbolic links, devices, sockets, FIFOs
                }
            }
        }

        mutating func file(_ shown: String, workspace: Workspace, matcher: (Substring) throws(SearchStopped) -> Bool) throws {
            guard stopped == nil else { return }
            guard filesScanned < limits.maxSearchFiles else {
                stopped = "after \(limits.maxSearchFiles) files"
                return
            }
            guard ContinuousClock.now < deadline else {
                stopped = "after \(limits.searchTimeBudget) (the time budget)"
                return
            }
            guard !Task.isCancelled else {
                stopped = "because the call was cancelled"
                return
            }
            guard let file = try JailedFile.opening(shown, in: workspace), file.isRegularFile else { return }
            filesScanned += 1
            guard file.size <= limits.maxReadBytes else {
                skippedLarge += 1
                return
            }
            guard let text = try file.readText(limit: limits.maxReadBytes) else {
                skippedBinary += 1
                return
            }
            var matched = false
            for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                do {
                    guard try matcher(line) else { continue }
                } catch {
                    stopped = "in \(file.shown) at line \(index + 1): \(error.reason)"
                    break
                }
                matched = true
                let clipped = line.count > 200 ? line.prefix(200) + "…" : line
                lines.append("\(file.shown):\(index + 1): \(clipped)")
                if lines.count >= limits.maxSearchResults {
                    stopped = "at \(limits.maxSearchResults) matches"
                    break
                }
            }
            if matched { filesWithMatches += 1 }
        }

        func report(pattern: String) -> String {
            var text = lines.isEmpty ? "No matches for '\(pattern)'." : lines.joined(separator: "\n")
            var notes = ["\(lines.count) matches in \(filesWithMatches) of \(filesScanned) files"]
            if skippedBinary > 0 { notes.append("\(skippedBinary) binary files skipped") }
            if skippedLarge > 0 { notes.append("\(skippedLarge) files above \(limits.maxReadBytes) bytes skipped") }
            if let stopped { notes.append("the search stopped \(stopped); narrow it with path or fileSuffix") }
            text += "\n[" + notes.joined(separator: "; ") + "]"
            return text
        }
    }
}
