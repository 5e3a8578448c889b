import Foundation

/// Readable text from an HTML page: the title, and the text with scripts, styles and other
/// non-content dropped, block elements on lines of their own, entities decoded, whitespace
/// collapsed. Not a browser: it reads markup, never runs it.
public enum HTMLText {
    /// Elements whose content is never text for a reader.
    static let dropped: Set<String> = ["script", "style", "noscript", "template", "svg", "iframe", "object", "canvas"]
    /// Elements that start a new line.
    static let blocks: Set<String> = [
        "p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table", "section", "article", "header", "footer",
        "ul", "ol", "pre", "blockquote", "hr", "main", "nav", "aside", "form", "dt", "dd", "figcaption",
    ]

    /// Linear in the page's length: an end tag searched for and not found is not searched for
    /// again (a page of `<title>` repeated, each without its end, would otherwise rescan the rest
    /// of the page once per tag). Stops early, with what it has, when its task is cancelled.
    public static func convert(_ html: String) -> (title: String?, text: String) {
        var title: String?
        var output = ""
        var index = html.startIndex
        // End tags known to be absent from the rest of the page.
        var missing: Set<String> = []
        var steps = 0
        func end(of name: String, from start: String.Index) -> Range<String.Index>? {
            guard !missing.contains(name) else { return nil }
            guard let found = search("</\(name)", in: html, from: start) else {
                missing.insert(name)
                return nil
            }
            return found
        }
        while index < html.endIndex {
            steps += 1
            if steps & 0xFFFF == 0 && Task.isCancelled { break }
            let character = html[index]
            guard character == "<" else {
                output.append(character)
                index = html.index(after: index)
                continue
            }
            let rest = html[index...]
            if rest.hasPrefix("<!--") {
                let close = missing.contains("-->") ? nil : search("-->", in: html, from: html.index(index, offsetBy: 4))
                if close == nil { missing.insert("-->") }
                index = close?.upperBound ?? html.endIndex
                continue
            }
            guard let close = rest.firstIndex(of: ">") else { break }
            let inside = html[html.index(after: index)..<close]
            let isEnd = inside.hasPrefix("/")
            let name = inside.drop { $0 == "/" }.prefix { $0.isLetter || $0.isNumber }.lowercased()
            index = html.index(after: close)
            if name == "title" && !isEnd, let end = end(of: "title", from: index) {
                title = decodeEntities(String(html[index..<end.lowerBound])).split(whereSeparator: \.isWhitespace).joined(separator: " ")
                index = html[end.upperBound...].firstIndex(of: ">").map { html.index(after: $0) } ?? html.endIndex
                continue
            }
            if dropped.contains(name) && !isEnd && !inside.hasSuffix("/") {
                // Skip to the matching end tag (script bodies may contain "<" freely).
                if let end = end(of: name, from: index) {
                    index = html[end.upperBound...].firstIndex(of: ">").map { html.index(after: $0) } ?? html.endIndex
                } else {
                    index = html.endIndex
                }
                continue
            }
            if blocks.contains(name) {
                // An item's end adds no line: the next item's start does.
                if isEnd && ["li", "dt", "dd", "tr"].contains(name) { continue }
                output.append("\n")
                if name == "li" && !isEnd { output.append("- ") }
            } else if name == "td" || name == "th" {
                output.append(" ")
            }
        }
        return (title, tidy(decodeEntities(output)))
    }

    /// Where the ASCII text `needle` next occurs in `html` from `start`, without regard to ASCII
    /// case. Scans bytes up to the match only (Foundation's `range(of:)` on a substring of a big
    /// page costs the length of the rest of the page each time, which made the conversion quadratic).
    static func search(_ needle: String, in html: String, from start: String.Index) -> Range<String.Index>? {
        let target = needle.utf8.map(lowercased)
        let bytes = html.utf8
        var position = start
        while position < bytes.endIndex {
            var probe = position
            var matched = 0
            while matched < target.count, probe < bytes.endIndex, lowercased(bytes[probe]) == target[matched] {
                matched += 1
                probe = bytes.index(after: probe)
            }
            if matched == target.count { return position..<probe }
            position = bytes.index(after: position)
        }
        return nil
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte
    }

    /// Whitespace runs to one space, lines trimmed, at most one blank line in a row.
    static func tidy(_ text: String) -> String {
        var lines: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\u{A0}" })
            let tidied = words.joined(separator: " ")
            if tidied.isEmpty && (lines.last?.isEmpty ?? true) { continue }
            lines.append(tidied)
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        return lines.joined(separator: "\n")
    }

    static let namedEntities: [String: String] = [
        "amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'", "nbsp": "\u{A0}", "copy": "©", "reg": "®", "mdash": "—",
        "ndash": "–", "hellip": "…", "laquo": "«", "raquo": "»", "ldquo": "“", "rdquo": "”", "lsquo": "‘", "rsquo": "’",
        "trade": "™", "euro": "€", "middot": "·", "bull": "•",
    ]

    static func decodeEntities(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var output = ""
        var index = text.startIndex
        while index < text.endIndex {
            guard text[index] == "&", let semicolon = text[index...].prefix(12).firstIndex(of: ";") else {
                output.append(text[index])
                index = text.index(after: index)
                continue
            }
            let entity = text[text.index(after: index)..<semicolon]
            var replacement: String?
            if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                replacement = UInt32(entity.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init).map { String($0) }
            } else if entity.hasPrefix("#") {
                replacement = UInt32(entity.dropFirst()).flatMap(Unicode.Scalar.init).map { String($0) }
            } else {
                replacement = namedEntities[String(entity)]
            }
            if let replacement {
                output += replacement
                index = text.index(after: semicolon)
            } else {
                output.append("&")
                index = text.index(after: index)
            }
        }
        return output
    }
}
