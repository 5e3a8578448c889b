import Foundation
public import TroupeCore

/// `fs_patch`: edits a text file in place — a search/replace, or a unified diff — and reports
/// conflicts instead of guessing. The file is replaced atomically, and only if every part of the
/// edit applies.
///
/// Not idempotent (a replacement that contains its search text grows each time), so a call cut
/// off by a crash is never repeated by itself.
public struct PatchFileTool: Tool {
    public let workspace: Workspace
    public let limits: FileToolLimits
    public let name = "fs_patch"
    public let description =
        "Edit a text file in the workspace: either replace an exact text (search + replace; it must occur once unless "
        + "replaceAll is true), or apply a unified diff (diff, with @@ hunks and a few lines of context). Nothing is "
        + "changed if any part does not apply; the conflict is reported."
    public let effect = ToolEffect.sideEffecting
    public let parameters: JSONSchema = .object(
        [
            .init("path", .string("The file, relative to the workspace root.", minLength: 1)),
            .init("search", .string("Exact text to replace (with replace).")),
            .init("replace", .string("The text that replaces it.")),
            .init("replaceAll", .boolean("Replace every occurrence, not just a single one.")),
            .init("diff", .string("A unified diff of this one file (instead of search/replace).")),
        ],
        required: ["path"]
    )

    public init(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) {
        self.workspace = workspace
        self.limits = limits
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        let requested = arguments["path"]?.stringValue ?? ""
        let diff = arguments["diff"]?.stringValue
        let search = arguments["search"]?.stringValue
        guard (diff == nil) != (search == nil) else {
            return .error("Give either diff, or search and replace — one of the two.")
        }
        let file = try JailedFile.opening(requested, in: workspace)
        if let file, !file.isRegularFile { return .error("'\(file.shown)' is not a regular file.") }
        if let file, file.size > limits.maxReadBytes {
            return .error("'\(file.shown)' has \(file.size) bytes; fs_patch edits files of at most \(limits.maxReadBytes).")
        }
        let original: String?
        if let file {
            guard let text = try file.readText(limit: limits.maxReadBytes) else {
                return .error("'\(file.shown)' is a binary file (or not UTF-8 text); fs_patch edits text only.")
            }
            original = text
        } else {
            original = nil
        }

        let edited: (text: String, summary: String)
        switch (diff, search) {
        case (let diff?, _):
            switch UnifiedDiff.apply(diff, to: original) {
            case .success(let result): edited = result
            case .failure(let conflict):
                return .error("The diff does not apply to '\(requested)': \(conflict.message) Nothing was changed.")
            }
        case (nil, let search?):
            guard let original else { return .error("No file '\(requested)'. fs_write creates files.") }
            guard let replacement = arguments["replace"]?.stringValue else { return .error("Give replace with search.") }
            switch Self.replace(search, with: replacement, in: original, all: arguments["replaceAll"]?.boolValue ?? false) {
            case .success(let result): edited = result
            case .failure(let conflict): return .error("\(conflict.message) Nothing was changed in '\(requested)'.")
            }
        default:
            return .error("Give either diff, or search and replace.")
        }
        let content = Data(edited.text.utf8)
        guard content.count <= limits.maxWriteBytes else {
            return .error("The edited file would have \(content.count) bytes; fs_patch writes at most \(limits.maxWriteBytes).")
        }
        return try WriteTarget.write(
            ["path": .string(requested), "content": .string(edited.text)], in: workspace, limits: limits, tool: name
        ) {
            target in
            try target.directory.replace(target.name, with: target.content)
            return ToolOutput("Patched \(target.shown): \(edited.summary).")
        }
    }

    /// `text` with `search` replaced: exactly once unless `all`.
    static func replace(_ search: String, with replacement: String, in text: String, all: Bool) -> Result<(String, String), ToolRefusal> {
        guard !search.isEmpty else { return .failure(ToolRefusal(message: "search is empty.")) }
        let ranges = text.ranges(of: search)
        guard !ranges.isEmpty else {
            var hint = ""
            let firstLine = search.split(separator: "\n").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            if !firstLine.isEmpty,
                let index = text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex(where: {
                    $0.trimmingCharacters(in: .whitespaces) == firstLine
                })
            {
                hint = " Line \(index + 1) has its first line with different indentation or spacing; copy the text exactly (fs_read)."
            }
            return .failure(ToolRefusal(message: "The search text is not in the file.\(hint)"))
        }
        if ranges.count > 1 && !all {
            let lines = ranges.prefix(10).map { String(text[..<$0.lowerBound].count(where: { $0 == "\n" }) + 1) }
            return .failure(
                ToolRefusal(
                    message: "The search text occurs \(ranges.count) times (lines \(lines.joined(separator: ", "))); "
                        + "add surrounding lines to make it unique, or set replaceAll."))
        }
        let result = text.replacing(search, with: replacement)
        return .success((result, ranges.count == 1 ? "1 replacement" : "\(ranges.count) replacements"))
    }
}

/// Applying a unified diff to one file's text.
enum UnifiedDiff {
    struct Hunk {
        var header: String
        var oldStart: Int
        var oldCount: Int
        /// The lines as in the diff: " context", "-removed", "+added".
        var lines: [Substring]

        var oldLines: [Substring] { lines.filter { !$0.hasPrefix("+") }.map { $0.dropFirst() } }
        var newLines: [Substring] { lines.filter { !$0.hasPrefix("-") }.map { $0.dropFirst() } }
    }

    /// `text` (`nil`: the file does not exist yet) with the diff applied, or the first conflict.
    static func apply(_ diff: String, to text: String?) -> Result<(text: String, summary: String), ToolRefusal> {
        let hunks: [Hunk]
        switch parse(diff) {
        case .success(let parsed): hunks = parsed
        case .failure(let conflict): return .failure(conflict)
        }
        guard let text else {
            guard hunks.allSatisfy({ $0.oldCount == 0 }) else {
                return .failure(ToolRefusal(message: "the file does not exist, and the diff changes existing lines."))
            }
            let lines = hunks.flatMap(\.newLines)
            return .success((lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n"), "created with \(lines.count) lines"))
        }
        let endsWithNewline = text.hasSuffix("\n")
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if endsWithNewline { lines.removeLast() }
        var offset = 0
        var searchFrom = 0
        var added = 0
        var removed = 0
        for (number, hunk) in hunks.enumerated() {
            let old = hunk.oldLines
            let expected = max(0, (hunk.oldCount == 0 ? hunk.oldStart : hunk.oldStart - 1) + offset)
            guard let at = position(of: old, in: lines, near: expected, from: searchFrom) else {
                let actual = lines.dropFirst(min(expected, lines.count)).prefix(max(1, old.count)).map { "  |\($0)" }
                return .failure(
                    ToolRefusal(
                        message: "hunk \(number + 1) (\(hunk.header)) does not match the file. It expects:\n"
                            + old.map { "  |\($0)" }.joined(separator: "\n") + "\nbut line \(expected + 1) on reads:\n"
                            + (actual.isEmpty ? "  (end of file)" : actual.joined(separator: "\n")) + "\n"))
            }
            let new = hunk.newLines
            lines.replaceSubrange(at..<(at + old.count), with: new)
            offset += at - expected + new.count - old.count
            searchFrom = at + new.count
            added += hunk.lines.count(where: { $0.hasPrefix("+") })
            removed += hunk.lines.count(where: { $0.hasPrefix("-") })
        }
        let result = lines.joined(separator: "\n") + (endsWithNewline || lines.isEmpty ? "\n" : "")
        return .success((result, "\(hunks.count) hunk\(hunks.count == 1 ? "" : "s") applied, +\(added) −\(removed) lines"))
    }

    /// Where `old` occurs in `lines` at or after `from`, the closest to `expected`.
    private static func position(of old: [Substring], in lines: [Substring], near expected: Int, from: Int) -> Int? {
        func matches(at index: Int) -> Bool {
            index >= from && index + old.count <= lines.count && zip(lines[index...], old).allSatisfy { $0 == $1 }
        }
        for distance in 0...max(lines.count, 0) {
            // Quadratic at worst (a long file, a long hunk): a cancelled call (its time limit) stops.
            if distance & 0x3FF == 0x3FF && Task.isCancelled { return nil }
            if matches(at: expected - distance) { return expected - distance }
            if matches(at: expected + distance) { return expected + distance }
            if expected - distance < from && expected + distance + old.count > lines.count { break }
        }
        return nil
    }

    private static func parse(_ diff: String) -> Result<[Hunk], ToolRefusal> {
        var hunks: [Hunk] = []
        var current: Hunk?
        var remainingOld = 0
        var remainingNew = 0
        let body = diff.hasSuffix("\n") ? diff.dropLast() : Substring(diff)
        for line in body.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = line.hasSuffix("\r") ? line.dropLast() : line
            if line.hasPrefix("@@") {
                if let current { hunks.append(current) }
                guard let (oldStart, oldCount, newCount) = header(line) else {
                    return .failure(
                        ToolRefusal(
                            message: "'\(line.prefix(200))' is not a hunk header like @@ -12,5 +12,6 @@ (line numbers up to "
                                + "\(ReadFileTool.maxLineNumber))."))
                }
                current = Hunk(header: String(line), oldStart: oldStart, oldCount: oldCount, lines: [])
                remainingOld = oldCount
                remainingNew = newCount
                continue
            }
            guard current != nil else { continue }  // ---/+++ headers, diff --git lines, prose before the first hunk
            if line.hasPrefix("\\") { continue }  // "\ No newline at end of file"
            if remainingOld == 0 && remainingNew == 0 {
                if let finished = current { hunks.append(finished) }
                current = nil
                continue
            }
            let kind = line.first ?? " "
            switch kind {
            case "-": remainingOld -= 1
            case "+": remainingNew -= 1
            default:
                remainingOld -= 1
                remainingNew -= 1
            }
            current?.lines.append(kind == " " || kind == "-" || kind == "+" ? line : " " + line)
        }
        if let current { hunks.append(current) }
        guard !hunks.isEmpty else { return .failure(ToolRefusal(message: "it has no hunks (lines starting with @@).")) }
        for (number, hunk) in hunks.enumerated() where hunk.oldLines.count != hunk.oldCount {
            return .failure(
                ToolRefusal(
                    message: "hunk \(number + 1) (\(hunk.header)) promises \(hunk.oldCount) old lines but has \(hunk.oldLines.count)."))
        }
        return .success(hunks)
    }

    /// `(oldStart, oldCount, newCount)` from `@@ -a,b +c,d @@`.
    private static func header(_ line: Substring) -> (Int, Int, Int)? {
        let parts = line.split(separator: " ")
        guard parts.count >= 3, parts[1].hasPrefix("-"), parts[2].hasPrefix("+") else { return nil }
        // Line numbers and counts past a billion are refused: no text file has them, and sums of
        // them must not overflow.
        func number(_ text: Substring) -> Int? {
            guard let value = Int(text), value >= 0, value <= ReadFileTool.maxLineNumber else { return nil }
            return value
        }
        func range(_ text: Substring) -> (Int, Int)? {
            let numbers = text.dropFirst().split(separator: ",", omittingEmptySubsequences: false)
            guard let start = number(numbers[0]) else { return nil }
            guard numbers.count > 1 else { return (start, 1) }
            guard numbers.count == 2, let count = number(numbers[1]) else { return nil }
            return (start, count)
        }
        guard let old = range(parts[1]), let new = range(parts[2]) else { return nil }
        return (old.0, old.1, new.1)
    }
}
