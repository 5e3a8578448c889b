public import Foundation
import Synchronization

/// Masks secrets in text that leaves the process or is kept: log lines, error messages, the
/// journal (events are masked as stores write them), API responses, live text.
///
/// Two kinds are masked with ``mask``:
/// - the **configured secrets** the settings hold (model API keys, MCP tokens and secret
///   variables, the store's password, `TROUPE_API_KEY`), registered with ``register(_:)`` — each
///   also in its JSON-escaped form, so that it is found inside a stored event;
/// - **common credential shapes**: API keys of the major providers (OpenAI and Anthropic `sk-…`,
///   Stripe, GitHub, Slack, Google), Troupe's own `trp_…` keys, `Bearer …` tokens, JWTs, PEM
///   private keys, AWS access key IDs, the password in `scheme://user:password@host` and
///   `password=…` pairs.
///
/// Every pattern stops at `"` and `\`, so masking the JSON text of an event leaves valid JSON.
/// Text that holds none of the patterns' markers is returned as it is after one scan of its
/// bytes (the common case costs no regular expression).
public final class Redactor: Sendable {
    /// The process's redactor: the settings register their secrets in it, and the stores, the
    /// logs and the API mask with it.
    public static let shared = Redactor()

    /// What a secret is replaced with.
    public static let mask = "[REDACTED]"

    /// The shortest configured secret that is masked: shorter values (a port, `true`) would mask
    /// ordinary words.
    public static let minimumSecretLength = 8

    private let secrets = Mutex<[String]>([])

    public init() {}

    /// Masks `secret` from now on (and its JSON-escaped form); values shorter than
    /// ``minimumSecretLength`` are ignored.
    public func register(_ secret: String) {
        let secret = secret.trimmingCharacters(in: .whitespacesAndNewlines)
        guard secret.count >= Self.minimumSecretLength else { return }
        var forms = [secret]
        if let escaped = try? JSONCoding.encodeString(secret), escaped.count > 2 {
            let inner = String(escaped.dropFirst().dropLast())
            if inner != secret { forms.append(inner) }
        }
        secrets.withLock { list in
            for form in forms where !list.contains(form) { list.append(form) }
            // Longest first: a secret that contains another is masked whole.
            list.sort { $0.count > $1.count }
        }
    }

    /// `text` with every configured secret and credential shape masked.
    public func redact(_ text: String) -> String {
        var result = text
        for secret in secrets.withLock({ $0 }) where result.contains(secret) {
            result = result.replacingOccurrences(of: secret, with: Self.mask)
        }
        guard Self.mayHoldCredential(result) else { return result }
        for pattern in Self.patterns {
            result = result.replacing(pattern.regex) { match in pattern.replacement(match) }
        }
        return result
    }

    /// `error` with its message and details masked.
    public func redact(_ error: TroupeError) -> TroupeError {
        var masked = error
        masked.message = redact(error.message)
        masked.details = error.details.mapValues(redact)
        return masked
    }

    /// `event` with every text in it masked: through its JSON form, decoded again only when
    /// something was masked. Returns the event and its JSON text (what a store writes).
    public func redact(_ event: RunEvent) throws -> (event: RunEvent, json: String) {
        let json = try JSONCoding.encodeString(event)
        let masked = redact(json)
        guard masked != json else { return (event, json) }
        return (try JSONCoding.decode(RunEvent.self, from: Data(masked.utf8)), masked)
    }

    // MARK: Patterns

    private struct Pattern: @unchecked Sendable {
        // Safety: a compiled regex is never mutated; matching only reads it.
        let regex: Regex<AnyRegexOutput>
        let replacement: @Sendable (Regex<AnyRegexOutput>.Match) -> String
    }

    private static func pattern(_ source: String, keeping group: Int? = nil, suffix: String = "") -> Pattern {
        // The sources are constants of this file: one that does not compile is a bug caught by the tests.
        let regex = try! Regex(source)
        return Pattern(regex: regex) { match in
            guard let group, let kept = match.output[group].substring else { return mask + suffix }
            return String(kept) + mask + suffix
        }
    }

    private static let patterns: [Pattern] = [
        // PEM private keys, whole (or to the end of the text when cut off).
        pattern(#"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----[^"]*?(?:-----END [A-Z ]{0,40}PRIVATE KEY-----|$)"#),
        // Provider API keys.
        pattern(#"\bsk-[A-Za-z0-9_\-]{20,}"#),
        pattern(#"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"#),
        pattern(#"\bgh[pousr]_[A-Za-z0-9]{30,}"#),
        pattern(#"\bgithub_pat_[A-Za-z0-9_]{20,}"#),
        pattern(#"\bxox[abprs]-[A-Za-z0-9\-]{10,}"#),
        pattern(#"\bAIza[0-9A-Za-z_\-]{35}"#),
        pattern(#"\btrp_[A-Za-z0-9]{52}\b"#),
        pattern(#"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"#),
        // JWTs: header, payload and signature, base64url.
        pattern(#"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"#),
        // Bearer tokens, whatever their shape.
        pattern(#"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=\-]{8,}"#, keeping: 1),
        // The password in a URL's user information.
        pattern(#"(\b[A-Za-z][A-Za-z0-9+.\-]{0,20}://[^\s"\\:@/]{1,100}:)[^\s"\\@/]{1,200}@"#, keeping: 1, suffix: "@"),
        // password=… (connection strings, environment dumps).
        pattern(#"(?i)(\b(?:password|passwd|pwd)\s{0,3}[=:]\s{0,3})[^\s"\\&;,']{3,}"#, keeping: 1),
    ]

    /// Whether `text` holds a marker of any pattern: one pass over its bytes, no regular expression.
    static func mayHoldCredential(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { bytes in
            let count = bytes.count
            var index = 0
            func at(_ offset: Int, _ literal: StaticString) -> Bool {
                let length = literal.utf8CodeUnitCount
                guard offset + length <= count else { return false }
                return literal.withUTF8Buffer { literal in
                    for position in 0..<length {
                        var byte = bytes[offset + position]
                        // A lowercase letter of the literal matches either case.
                        if byte >= 0x41 && byte <= 0x5A && literal[position] >= 0x61 { byte += 0x20 }
                        if byte != literal[position] { return false }
                    }
                    return true
                }
            }
            while index < count {
                switch bytes[index] {
                case UInt8(ascii: "-"): if at(index, "-----BEGIN") { return true }
                case UInt8(ascii: "s"), UInt8(ascii: "S"): if at(index, "sk-") || at(index, "sk_") { return true }
                case UInt8(ascii: "r"), UInt8(ascii: "R"): if at(index, "rk_") { return true }
                case UInt8(ascii: "p"), UInt8(ascii: "P"):
                    if at(index, "pk_") || at(index, "password") || at(index, "passwd") || at(index, "pwd") { return true }
                case UInt8(ascii: "g"), UInt8(ascii: "G"): if at(index, "gh") || at(index, "github_pat_") { return true }
                case UInt8(ascii: "x"), UInt8(ascii: "X"): if at(index, "xox") { return true }
                case UInt8(ascii: "A"): if at(index, "AIza") || at(index, "AKIA") || at(index, "ASIA") { return true }
                case UInt8(ascii: "t"), UInt8(ascii: "T"): if at(index, "trp_") { return true }
                case UInt8(ascii: "e"), UInt8(ascii: "E"): if at(index, "eyJ") { return true }
                case UInt8(ascii: "b"), UInt8(ascii: "B"): if at(index, "bearer") { return true }
                case UInt8(ascii: ":"): if at(index, "://") { return true }
                default: break
                }
                index += 1
            }
            return false
        }
    }
}
