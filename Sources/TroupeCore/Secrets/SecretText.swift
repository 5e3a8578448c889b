/// Checks on secrets (API keys, header values) before they go on the wire.
///
/// A key read from a `.env` file written on Windows ends in `\r`; an HTTP client refuses such a
/// header value, and its error quotes the value — `Bearer sk-…` would then be printed, logged and
/// journaled. So surrounding whitespace is trimmed when a secret is read, and a control character
/// left inside is refused with an error that names where the secret came from, never the secret.
package enum SecretText {
    /// `value` without surrounding whitespace and line breaks; throws `configuration` naming
    /// `source` if a control character is left inside.
    package static func cleaned(_ value: String, source: String) throws(TroupeError) -> String {
        let trimmed = value.trimmingWhitespace()
        if let problem = problem(in: trimmed, source: source) { throw problem }
        return trimmed
    }

    /// The error for a secret with a control character inside, or `nil`.
    package static func problem(in value: String, source: String) -> TroupeError? {
        guard value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return nil }
        return TroupeError(
            .configuration,
            "The secret from \(source) contains a control character (a line break inside it, say); fix its value. "
                + "(The value is not shown.)",
            details: ["source": source]
        )
    }
}

extension String {
    /// Without leading and trailing spaces, tabs and line breaks.
    fileprivate func trimmingWhitespace() -> String {
        let isSpace: (Unicode.Scalar) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }), let last = scalars.lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(scalars[first...last])
    }
}
