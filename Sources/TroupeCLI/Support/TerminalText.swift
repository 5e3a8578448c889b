/// Text made safe to print to a terminal: what a model, a web page, a file or an MCP server wrote
/// reaches the screen through `run`, `show` and error lines, and escape sequences in it could
/// recolour, hide or rewrite what is shown, set the window title, or (OSC 52) write the clipboard.
enum TerminalText {
    /// `text` without escape sequences (CSI, OSC, DCS and the like, 7- and 8-bit) and without
    /// control characters other than line feed and tab (a carriage return could make one line
    /// print over another).
    static func safe(_ text: String) -> String {
        // Most text has nothing to strip: keep it as it is.
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var result = String.UnicodeScalarView()
        var scalars = text.unicodeScalars.makeIterator()
        while let scalar = scalars.next() {
            switch scalar.value {
            case 0x0A, 0x09:
                result.append(scalar)
            case 0x1B:
                if let lineFeed = skipSequence(after: scalars.next(), in: &scalars) { result.append(lineFeed) }
            case 0x9B:  // CSI
                if let lineFeed = skipSequence(after: "[", in: &scalars) { result.append(lineFeed) }
            case 0x9D:  // OSC
                if let lineFeed = skipSequence(after: "]", in: &scalars) { result.append(lineFeed) }
            case 0x90, 0x98, 0x9E, 0x9F:  // DCS, SOS, PM, APC
                if let lineFeed = skipSequence(after: "P", in: &scalars) { result.append(lineFeed) }
            default:
                if !isControl(scalar) { result.append(scalar) }
            }
        }
        return String(result)
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        (scalar.value < 0x20 && scalar.value != 0x0A && scalar.value != 0x09) || (0x7F...0x9F).contains(scalar.value)
    }

    /// The most characters one sequence may hide: an unterminated one (cut off by a clip, or
    /// sent on purpose) must not swallow what follows.
    static let maxSequenceLength = 512

    /// Skips the rest of an escape sequence whose introducer (after ESC) is `introducer`; a line
    /// feed (kept) or ``maxSequenceLength`` characters end it too. Returns a line feed that ended
    /// it, to be printed.
    @discardableResult
    private static func skipSequence(
        after introducer: Unicode.Scalar?, in scalars: inout String.UnicodeScalarView.Iterator
    ) -> Unicode.Scalar? {
        let isString: Bool
        switch introducer {
        case "["?: isString = false
        case "]"?, "P"?, "X"?, "^"?, "_"?: isString = true
        case "\n"?: return "\n"
        default: return nil  // a two-character sequence (ESC 7, ESC c): the introducer is already skipped
        }
        for _ in 0..<maxSequenceLength {
            guard let next = scalars.next() else { return nil }
            if next == "\n" { return next }
            if isString {
                // A string ends at BEL or the string terminator (ESC \ or 0x9C).
                if next.value == 0x07 || next.value == 0x9C { return nil }
                if next.value == 0x1B {
                    _ = scalars.next()
                    return nil
                }
            } else if (0x40...0x7E).contains(next.value) {
                return nil  // a control sequence's final byte
            }
        }
        return nil
    }
}
