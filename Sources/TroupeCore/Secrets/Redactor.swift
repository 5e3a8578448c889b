import Foundation
import Synchronization

/// Masks secrets in text that leaves the process or is kept: log lines, error messages, the
/// journal (events are masked as stores write them), API responses, live text.
///
/// Two kinds are masked with ``mask``:
/// - the **configured secrets** the settings hold (model API keys, MCP tokens and secret
///   variables, the store's password, `TROUPE_API_KEY`), registered with ``register(_:)``;
/// - **common credential shapes**: API keys of the major providers (OpenAI and Anthropic `sk-…`,
///   Stripe, GitHub, Slack, Google), Troupe's own `trp_…` keys, `Bearer …` tokens, JWTs, PEM
///   private keys, AWS access key IDs, the password in `scheme://user:password@host` and
///   `password=…` pairs.
///
/// The shapes are found by one linear scan of the text's bytes (no regular expression, so no
/// input can make it slow), and text without a marker of any shape is returned as it is.
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

    /// Masks `secret` from now on; values shorter than ``minimumSecretLength`` are ignored.
    public func register(_ secret: String) {
        let secret = secret.trimmingCharacters(in: .whitespacesAndNewlines)
        guard secret.count >= Self.minimumSecretLength else { return }
        secrets.withLock { list in
            guard !list.contains(secret) else { return }
            list.append(secret)
            // Longest first: a secret that contains another is masked whole.
            list.sort { $0.count > $1.count }
        }
    }

    /// `text` with every configured secret and credential shape masked.
    public func redact(_ text: String) -> String {
        var result = text
        // Byte for byte (`.literal`): a secret followed by a combining mark is still found.
        for secret in secrets.withLock({ $0 }) where result.range(of: secret, options: .literal) != nil {
            result = result.replacingOccurrences(of: secret, with: Self.mask, options: .literal)
        }
        var bytes = Array(result.utf8)
        let ranges = CredentialScanner(bytes).ranges()
        guard !ranges.isEmpty else { return result }
        for range in ranges.reversed() { bytes.replaceSubrange(range, with: Self.mask.utf8) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `error` with its message and details masked.
    public func redact(_ error: TroupeError) -> TroupeError {
        var masked = error
        masked.message = redact(error.message)
        masked.details = error.details.mapValues(redact)
        masked.underlying = error.underlying.map(redact)
        return masked
    }

    /// `event` as a store keeps it: its texts masked — the goal, tool outputs, model answers,
    /// plans, errors and reasons. What replay executes is kept as it is: tool calls' arguments
    /// (the model's and edited ones), the tools' parameters, the configuration, keys and IDs.
    public func redact(_ event: RunEvent) -> RunEvent {
        switch event {
        case .runCreated(let goal, let configuration):
            return .runCreated(goal: redact(goal), configuration: configuration)
        case .activityCompleted(let key, .tool(var output)):
            output.content = redact(output.content)
            return .activityCompleted(key: key, result: .tool(output))
        case .activityCompleted(let key, .model(var response)):
            response.message.content = response.message.content.map(redact)
            return .activityCompleted(key: key, result: .model(response))
        case .activityFailed(let key, let error):
            return .activityFailed(key: key, error: redact(error))
        case .modelCallRetried(let key, let attempt, let error, let delay):
            return .modelCallRetried(key: key, attempt: attempt, error: redact(error), retryDelaySeconds: delay)
        case .planProposed(let round, let plan):
            return .planProposed(round: round, plan: redact(plan))
        case .replanned(let round, let plan, let reason):
            return .replanned(round: round, plan: redact(plan), reason: redact(reason))
        case .planRejected(let round, let attempt, let problems):
            return .planRejected(round: round, attempt: attempt, problems: problems.map(redact))
        case .stepCompleted(let stepID, let output):
            return .stepCompleted(stepID: stepID, output: redact(output))
        case .stepFailed(let stepID, let error):
            return .stepFailed(stepID: stepID, error: redact(error))
        case .runNeedsAttention(let key, let reason):
            return .runNeedsAttention(key: key, reason: redact(reason))
        case .approvalDecided(let key, var decision):
            decision.reason = decision.reason.map(redact)
            return .approvalDecided(key: key, decision: decision)
        case .runCancelled(let reason):
            return .runCancelled(reason: redact(reason))
        case .runSucceeded(let answer):
            return .runSucceeded(answer: redact(answer))
        case .runFailed(let error):
            return .runFailed(error: redact(error))
        case .leaseAcquired, .configurationUpdated, .activityStarted, .attentionResolved, .approvalRequested, .activityCompleted,
            .stepStarted:
            return event
        }
    }

    private func redact(_ plan: Plan) -> Plan {
        var plan = plan
        for index in plan.steps.indices {
            plan.steps[index].title = redact(plan.steps[index].title)
            plan.steps[index].instruction = redact(plan.steps[index].instruction)
        }
        return plan
    }
}

/// Finds credential shapes in UTF-8 bytes in one pass. Every marker and delimiter is ASCII, so
/// byte offsets never split a multi-byte character.
struct CredentialScanner {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// The byte ranges to mask, in order, not overlapping.
    func ranges() -> [Range<Int>] {
        var found: [Range<Int>] = []
        var index = 0
        while index < bytes.count {
            if let range = match(at: index) {
                found.append(range)
                index = max(range.upperBound, index + 1)
            } else {
                index += 1
            }
        }
        return found
    }

    private func match(at index: Int) -> Range<Int>? {
        let byte = bytes[index]
        // `password=` also inside names (`DB_PASSWORD=`, `--password=`).
        if byte | 0x20 == UInt8(ascii: "p"), index == 0 || !Self.isAlphanumeric(bytes[index - 1]), let range = passwordPair(at: index) {
            return range
        }
        switch byte {
        case UInt8(ascii: "-"): return privateKey(at: index)
        case UInt8(ascii: ":"): return urlPassword(at: index)
        case UInt8(ascii: "b"), UInt8(ascii: "B"): return startsWord(index) ? bearer(at: index) : nil
        default:
            return startsWord(index) && Self.isTokenByte(byte) ? token(at: index) : nil
        }
    }

    // MARK: Tokens: provider keys, AWS key IDs, JWTs

    /// A run of token characters starting at `index` that has a credential's shape. Each byte is
    /// looked at by the word it starts only (a dot starts a new word), except for the two more
    /// parts of a JWT.
    private func token(at index: Int) -> Range<Int>? {
        let first = segment(from: index)
        if bytes[index..<first].starts(with: Array("eyJ".utf8)), first - index >= 8 {
            var end = first
            var parts = 1
            while parts < 3, end < bytes.count, bytes[end] == UInt8(ascii: ".") {
                let next = segment(from: end + 1)
                guard next - (end + 1) >= 8 else { break }
                end = next
                parts += 1
            }
            if parts == 3 { return index..<end }
        }
        return Self.isKey(bytes[index..<first]) ? index..<first : nil
    }

    /// Where the run of token characters from `index` ends.
    private func segment(from index: Int) -> Int {
        var end = index
        while end < bytes.count, Self.isTokenByte(bytes[end]) { end += 1 }
        return end
    }

    private static let prefixes: [(prefix: [UInt8], minimumRest: Int)] = [
        ("sk-", 20), ("sk_live_", 16), ("sk_test_", 16), ("rk_live_", 16), ("rk_test_", 16), ("pk_live_", 16),
        ("ghp_", 30), ("gho_", 30), ("ghu_", 30), ("ghs_", 30), ("ghr_", 30), ("github_pat_", 20),
        ("xoxb-", 10), ("xoxa-", 10), ("xoxp-", 10), ("xoxr-", 10), ("xoxs-", 10), ("AIza", 35), ("trp_", 52),
    ].map { (Array($0.0.utf8), $0.1) }

    private static func isKey(_ segment: ArraySlice<UInt8>) -> Bool {
        for (prefix, rest) in prefixes where segment.count >= prefix.count + rest && segment.starts(with: prefix) {
            return true
        }
        // AWS access key IDs: AKIA or ASIA and 16 upper-case letters or digits, exactly.
        if segment.count == 20, segment.starts(with: Array("AKIA".utf8)) || segment.starts(with: Array("ASIA".utf8)) {
            return segment.dropFirst(4).allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) }
        }
        return false
    }

    // MARK: Bearer tokens, passwords

    /// `bearer` (any case), blanks, and a token of 8 or more characters: the token.
    private func bearer(at index: Int) -> Range<Int>? {
        guard matchesIgnoringCase("bearer", at: index) else { return nil }
        var start = index + 6
        guard start < bytes.count, bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: "\t") else { return nil }
        while start < bytes.count, bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: "\t") { start += 1 }
        var end = start
        var symbolic = false
        while end < bytes.count, Self.isTokenByte(bytes[end]) || "._~+/=".utf8.contains(bytes[end]) {
            if !Self.isLetter(bytes[end]) { symbolic = true }
            end += 1
        }
        // A token, not a word of prose ("Bearer authentication"): a digit or symbol, or long.
        return end - start >= 8 && (symbolic || end - start >= 24) ? start..<end : nil
    }

    /// `password` or `passwd` (any case, also ending a name: `DB_PASSWORD`), an optional closing
    /// quote, `=` or `:`, an optional opening quote, and the value: the value. After `:` (prose,
    /// code: `password: String`) only a quoted value or one with a digit or symbol counts.
    private func passwordPair(at index: Int) -> Range<Int>? {
        var after: Int?
        for word in ["password", "passwd"] where matchesIgnoringCase(word, at: index) {
            after = index + word.utf8.count
            break
        }
        guard var position = after else { return nil }
        func skip(_ allowed: String, most: Int) {
            var skipped = 0
            while position < bytes.count, allowed.utf8.contains(bytes[position]), skipped < most {
                position += 1
                skipped += 1
            }
        }
        skip("\"'\\", most: 2)
        skip(" ", most: 3)
        guard position < bytes.count, bytes[position] == UInt8(ascii: "=") || bytes[position] == UInt8(ascii: ":") else { return nil }
        let colon = bytes[position] == UInt8(ascii: ":")
        position += 1
        skip(" ", most: 3)
        let before = position
        skip("\"'\\", most: 2)
        let quoted = position > before
        var end = position
        var symbolic = false
        while end < bytes.count, !Self.endsValue(bytes[end]) {
            if !Self.isLetter(bytes[end]) { symbolic = true }
            end += 1
        }
        guard end - position >= 3, !colon || quoted || symbolic, bytes[end - 1] != UInt8(ascii: ")") else { return nil }
        return position..<end
    }

    /// At the `:` of `scheme://`: the password of `user:password@` after it.
    private func urlPassword(at index: Int) -> Range<Int>? {
        guard index + 2 < bytes.count, bytes[index + 1] == UInt8(ascii: "/"), bytes[index + 2] == UInt8(ascii: "/") else { return nil }
        var position = index + 3
        let userStart = position
        while position < bytes.count, position - userStart <= 100, !Self.endsUserInfo(bytes[position]), bytes[position] != UInt8(ascii: ":")
        {
            position += 1
        }
        // The user may be empty (`redis://:secret@host`).
        guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { return nil }
        let passwordStart = position + 1
        var end = passwordStart
        while end < bytes.count, end - passwordStart <= 200, !Self.endsUserInfo(bytes[end]) { end += 1 }
        guard end > passwordStart, end < bytes.count, bytes[end] == UInt8(ascii: "@") else { return nil }
        return passwordStart..<end
    }

    // MARK: PEM private keys

    /// `-----BEGIN … PRIVATE KEY…-----` (PGP's `PRIVATE KEY BLOCK` too) to its END line, or to
    /// the end of the text when cut off.
    private func privateKey(at index: Int) -> Range<Int>? {
        let begin = Array("-----BEGIN ".utf8)
        guard bytes[index...].starts(with: begin) else { return nil }
        let marker = Array("PRIVATE KEY".utf8)
        var position = index + begin.count
        let limit = min(bytes.count, position + 40)
        while position < limit, bytes[position] != UInt8(ascii: "\n") {
            if bytes[position...].starts(with: marker) {
                let end = Array("-----END ".utf8)
                var search = position + marker.count
                while search < bytes.count {
                    if bytes[search...].starts(with: end) {
                        // Through the END line: to its line break, at most 80 ASCII bytes on.
                        var close = search + end.count
                        while close < bytes.count, close - search < 80, bytes[close] != UInt8(ascii: "\n"), bytes[close] < 0x80 {
                            close += 1
                        }
                        return index..<close
                    }
                    search += 1
                }
                return index..<bytes.count
            }
            position += 1
        }
        return nil
    }

    // MARK: Bytes

    /// Whether a word starts at `index`: a dot ends a word too (`id.AKIA…`), and a JWT is
    /// found from its first part.
    private func startsWord(_ index: Int) -> Bool {
        index == 0 || !Self.isTokenByte(bytes[index - 1])
    }

    private func matchesIgnoringCase(_ word: String, at index: Int) -> Bool {
        let literal = Array(word.utf8)
        guard index + literal.count <= bytes.count else { return false }
        for (offset, expected) in literal.enumerated() {
            var byte = bytes[index + offset]
            if byte >= 0x41 && byte <= 0x5A { byte += 0x20 }
            if byte != expected { return false }
        }
        return true
    }

    private static func isLetter(_ byte: UInt8) -> Bool {
        (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isLetter(byte) || (byte >= 0x30 && byte <= 0x39)
    }

    static func isTokenByte(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x5F || byte == 0x2D
    }

    private static func endsValue(_ byte: UInt8) -> Bool {
        byte <= 0x20 || "\"\\&;,'".utf8.contains(byte)
    }

    private static func endsUserInfo(_ byte: UInt8) -> Bool {
        byte <= 0x20 || "\"\\@/?#".utf8.contains(byte)
    }
}
