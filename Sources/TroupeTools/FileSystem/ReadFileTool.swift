import Foundation
public import TroupeCore

/// `fs_read`: a text file's content, optionally a range of lines.
public struct ReadFileTool: Tool {
    public let workspace: Workspace
    public let limits: FileToolLimits
    public let name = "fs_read"
    public let description = "Read a text file in the workspace. Optionally give startLine and lineCount (1-based) to read part of it."
    public let effect = ToolEffect.readOnly
    public let parameters: JSONSchema = .object(
        [
            .init("path", .string("Path relative to the workspace root.", minLength: 1)),
            .init("startLine", .integer("First line to return, 1-based.", minimum: 1, maximum: ReadFileTool.maxLineNumber)),
            .init("lineCount", .integer("How many lines to return.", minimum: 1, maximum: ReadFileTool.maxLineNumber)),
        ],
        required: ["path"]
    )

    /// The largest line number or count accepted (larger ones are clamped by direct callers).
    public static let maxLineNumber = 1_000_000_000

    public init(workspace: Workspace, limits: FileToolLimits = FileToolLimits()) {
        self.workspace = workspace
        self.limits = limits
    }

    public func call(_ arguments: JSONValue, context: ToolContext) async throws -> ToolOutput {
        let path = arguments["path"]?.stringValue ?? ""
        guard let file = try JailedFile.opening(path, in: workspace) else {
            return .error("No file '\(path)'. List the directory with fs_list to see what exists.")
        }
        if file.isDirectory { return .error("'\(file.shown)' is a directory; use fs_list.") }
        guard file.isRegularFile else { return .error("'\(file.shown)' is not a regular file.") }
        guard file.size <= limits.maxReadBytes else {
            // A large file (a log, say) can still be read in parts: its lines are streamed.
            if let start = Self.lineNumber(arguments["startLine"]), let count = Self.lineNumber(arguments["lineCount"]) {
                return try readLines(of: file, from: start, count: count)
            }
            return .error(
                "'\(file.shown)' has \(file.size) bytes; fs_read reads at most \(limits.maxReadBytes) at once. Give startLine and "
                    + "lineCount to read part of it, or use fs_search to find the part you need.")
        }
        guard let text = try file.readText(limit: limits.maxReadBytes) else {
            return .error("'\(file.shown)' is a binary file (or not UTF-8 text); fs_read reads text only.")
        }
        guard let start = Self.lineNumber(arguments["startLine"]) else { return ToolOutput(text) }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let count = Self.lineNumber(arguments["lineCount"]) ?? lines.count
        guard start <= lines.count else { return .error("'\(file.shown)' has only \(lines.count) lines.") }
        // Both are at most maxLineNumber, so the sum cannot overflow.
        return ToolOutput(lines[(start - 1)..<min(lines.count, start - 1 + count)].joined(separator: "\n"))
    }

    /// A line number or count from the model, clamped to 1 ... maxLineNumber (the schema says so;
    /// callers that skip the schema get the clamp instead of an overflow).
    static func lineNumber(_ value: JSONValue?) -> Int? {
        guard let number = value?.doubleValue, !number.isNaN else { return nil }
        return Int(min(max(number.rounded(.down), 1), Double(maxLineNumber)))
    }

    /// Lines `start ..< start + count` of a file too large to read whole, read in chunks; at most
    /// `maxReadBytes` of them are returned.
    private func readLines(of file: JailedFile, from start: Int, count: Int) throws -> ToolOutput {
        var line = 1
        var kept: [UInt8] = []
        var pending: [UInt8] = []
        var offset = 0
        var cut = false
        var lastByte: UInt8 = 0x0A
        let end = start + count
        reading: while line < end {
            let chunk = try file.readAll(limit: 64 << 10)
            if offset == 0, chunk.prefix(8_192).contains(0) {
                return .error("'\(file.shown)' is a binary file; fs_read reads text only.")
            }
            offset += chunk.count
            if chunk.isEmpty {
                if line >= start, !pending.isEmpty { kept += pending }
                break
            }
            for byte in chunk {
                lastByte = byte
                if line >= start {
                    // A line longer than the cap is not kept whole first (a one-line file of gigabytes).
                    guard kept.count + pending.count <= limits.maxReadBytes else {
                        kept += pending
                        cut = true
                        break reading
                    }
                    pending.append(byte)
                }
                guard byte == 0x0A else { continue }
                if line >= start {
                    kept += pending
                    pending.removeAll(keepingCapacity: true)
                }
                line += 1
                if line >= end { break reading }
                if kept.count > limits.maxReadBytes {
                    cut = true
                    break reading
                }
            }
        }
        guard line >= start || !kept.isEmpty else {
            // `line` is the number of the line after the last newline, empty if the file ends with one.
            return .error("'\(file.shown)' has only \(lastByte == 0x0A ? line - 1 : line) lines.")
        }
        var text = String(decoding: kept.prefix(limits.maxReadBytes), as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        if cut { text += "\n[cut at \(limits.maxReadBytes) bytes; ask for fewer lines]" }
        return ToolOutput(text)
    }
}
