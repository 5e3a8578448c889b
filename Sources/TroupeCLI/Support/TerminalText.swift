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
                skipSequence(after: scalars.next(), in: &scalars)
            case 0x9B:  // CSI
                skipSequence(after: "[", in: &scalars)
            case 0x9D:  // OSC
                skipSequence(after: "]", in: &scalars)
            case 0x90, 0x98, 0x9E, 0x9F:  // DCS, SOS, PM, APC
                skipSequence(after: "P", in: &scalars)
            default:
                if !isControl(scalar) { result.append(scalar) }
            }
        }
        return String(result)
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        (scalar.value < 0x20 && scalar.value != 0x0A && scalar.value != 0x09) || (0x7F...0x9F).contains(scalar.value)
    }

    /// Skips the rest of an escape sequence whose introducer (after ESC) is `introducer`.
    private static func skipSequence(after introducer: Unicode.Scalar?, in scalars: inout String.UnicodeScalarView.Iterator) {
        switch introducer {
        case "["?:
            // Parameters and intermediates, up to the final byte (@ to ~).
            while let next = scalars.next(), !(0x40...0x7E).contains(next.value) {}
        case "]"?, "P"?, "X"?, "^"?, "_"?:
            // A string, up to BEL or the string terminator (ESC \ or 0x9C).
            while let next = scalars.next() {
                if next.value == 0x07 || next.value == 0x9C { break }
                if next.value == 0x1B {
                    _ = scalars.next()
                    break
                }
            }
        default:
            break  // a two-character sequence (ESC 7, ESC c): the introducer is already skipped
        }
    }
}
