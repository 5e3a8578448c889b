import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 address, and whether a fetch may reach it.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(UInt32)
    /// 16 bytes, network order.
    case v6([UInt8])

    /// Reads an address literal, in every form the C library accepts — `127.0.0.1`, and for IPv4
    /// also `127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1` (a URL's host may be written so to
    /// slip past a naive check) — or an IPv6 literal with or without brackets.
    public init?(literal: String) {
        var text = literal
        if text.hasPrefix("["), text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        if text.contains(":") {
            var address = in6_addr()
            guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
            self = .v6(withUnsafeBytes(of: &address) { Array($0) })
            return
        }
        guard !text.isEmpty, text.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == "x" || $0 == "X" }) else { return nil }
        var address = in_addr()
        guard inet_aton(text, &address) != 0 else { return nil }
        self = .v4(UInt32(bigEndian: address.s_addr))
    }

    public var description: String {
        switch self {
        case .v4(let value):
            return [24, 16, 8, 0].map { String((value >> UInt32($0)) & 0xFF) }.joined(separator: ".")
        case .v6(let bytes):
            var address = in6_addr()
            withUnsafeMutableBytes(of: &address) { $0.copyBytes(from: bytes) }
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count))
            return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    /// Why a fetch may not reach this address (loopback, private, link-local — cloud metadata
    /// lives there —, carrier-grade NAT, multicast, reserved…), or `nil` for a public address.
    /// IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by it.
    public var blockReason: String? {
        switch self {
        case .v4(let value):
            return Self.v4Reason(value)
        case .v6(let bytes):
            if bytes.allSatisfy({ $0 == 0 }) { return "the unspecified address" }
            if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return "loopback" }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
                return Self.embedded(bytes, at: 12).map { "an IPv4-mapped address (\($0))" }
            }
            if bytes[0..<12].allSatisfy({ $0 == 0 }) { return Self.embedded(bytes, at: 12).map { "an IPv4-compatible address (\($0))" } }
            if bytes[0..<12] == [0x00, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0] {
                return Self.embedded(bytes, at: 12).map { "a NAT64 address (\($0))" }
            }
            // RFC 8215: a NAT64 prefix for a network's own translator, which reaches its private addresses.
            if bytes[0..<6] == [0x00, 0x64, 0xFF, 0x9B, 0x00, 0x01] { return "a local-use NAT64 address (64:ff9b:1::/48)" }
            if bytes[0] == 0x20 && bytes[1] == 0x02 { return Self.embedded(bytes, at: 2).map { "a 6to4 address (\($0))" } }
            if bytes[0] & 0xFE == 0xFC { return "a unique local (private) address" }
            if bytes[0] == 0xFE && bytes[1] & 0xC0 == 0x80 { return "a link-local address" }
            if bytes[0] == 0xFE && bytes[1] & 0xC0 == 0xC0 { return "a site-local address" }
            if bytes[0] == 0xFF { return "a multicast address" }
            if bytes[0..<4] == [0x20, 0x01, 0x0D, 0xB8] { return "a documentation address" }
            if bytes[0..<8] == [0x01, 0x00, 0, 0, 0, 0, 0, 0] { return "a discard address" }
            return nil
        }
    }

    /// The reason the IPv4 address inside an IPv6 one is blocked, if it is.
    private static func embedded(_ bytes: [UInt8], at offset: Int) -> String? {
        let value = bytes[offset..<(offset + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return v4Reason(value).map { "\(IPAddress.v4(value)), \($0)" }
    }

    private static let v4Blocks: [(network: UInt32, prefix: UInt32, reason: String)] = [
        (0x0000_0000, 8, "\"this network\" (0.0.0.0/8)"),
        (0x0A00_0000, 8, "private (10.0.0.0/8)"),
        (0x6440_0000, 10, "carrier-grade NAT (100.64.0.0/10)"),
        (0x7F00_0000, 8, "loopback (127.0.0.0/8)"),
        (0xA9FE_0000, 16, "link-local (169.254.0.0/16, where cloud metadata services answer)"),
        (0xAC10_0000, 12, "private (172.16.0.0/12)"),
        (0xC000_0000, 24, "IETF protocol assignments (192.0.0.0/24)"),
        (0xC000_0200, 24, "documentation (192.0.2.0/24)"),
        (0xC0A8_0000, 16, "private (192.168.0.0/16)"),
        (0xC612_0000, 15, "benchmarking (198.18.0.0/15)"),
        (0xC633_6400, 24, "documentation (198.51.100.0/24)"),
        (0xCB00_7100, 24, "documentation (203.0.113.0/24)"),
        (0xE000_0000, 4, "multicast (224.0.0.0/4)"),
        (0xF000_0000, 4, "reserved or broadcast (240.0.0.0/4)"),
    ]

    private static func v4Reason(_ value: UInt32) -> String? {
        v4Blocks.first { value >> (32 - $0.prefix) == $0.network >> (32 - $0.prefix) }?.reason
    }
}
