public import Crypto
public import Foundation
public import TroupeCore

/// What a caller of the API may do.
public enum Role: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    /// Reads its tenant's runs and events.
    case viewer
    /// A viewer that also creates, cancels, resumes and approves its tenant's runs.
    case `operator`
    /// Manages keys, and acts on every tenant's runs.
    case admin

    /// Whether this role may do what `role` may.
    public func includes(_ role: Role) -> Bool { self >= role }

    public static func < (lhs: Role, rhs: Role) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// Tenant names: what keys and runs carry, and what settings (`tenants.NAME.*`) name.
public enum TenantName {
    /// A name of 1 to 63 lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit.
    public static func validated(_ name: String) throws(TroupeError) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789._-")
        guard (1...63).contains(name.count), name.allSatisfy(allowed.contains), let first = name.first, first.isLetter || first.isNumber
        else {
            throw TroupeError(
                .invalidInput,
                "The tenant name '\(name.prefix(80))' is not valid: use 1 to 63 lowercase letters, digits, '.', '_' or '-', "
                    + "starting with a letter or digit.", details: ["field": "tenant"])
        }
        return name
    }
}

/// Which runs a store handle reaches.
public enum TenantScope: Sendable, Hashable {
    /// Every tenant's (an admin, a worker, the CLI on its own store).
    case all
    /// One tenant's only.
    case tenant(String)

    /// The tenant a query is limited to, `nil` for all.
    public var tenant: String? {
        switch self {
        case .all: nil
        case .tenant(let name): name
        }
    }
}

/// An API key as the store keeps it: never the key itself, only its SHA-256.
///
/// A key reads `trp_` followed by 52 letters and digits: the first 12 are its public ID (the key
/// `key_…` of the same 12), the other 40 its secret (about 238 random bits). The prefix lets
/// secret scanners recognise a leaked key; the ID lets the server find the record without
/// comparing secrets, and the digests are then compared in constant time.
public struct APIKeyRecord: Sendable, Hashable, Codable {
    /// `key_` and the 12 characters after `trp_` in the key.
    public var id: String
    /// What the key starts with (`trp_` and its ID's 12 characters), to recognise it by.
    public var prefix: String
    public var name: String?
    public var tenant: String
    public var role: Role
    public var createdAt: Date
    public var expiresAt: Date?
    /// When the key was last used (recorded in batches, so up to a minute late).
    public var lastUsedAt: Date?
    public var revokedAt: Date?
    /// The SHA-256 of the whole key, in hex. Not part of any listing.
    public var digest: String

    public init(
        id: String, prefix: String, name: String?, tenant: String, role: Role, createdAt: Date, expiresAt: Date?,
        lastUsedAt: Date? = nil, revokedAt: Date? = nil, digest: String
    ) {
        self.id = id
        self.prefix = prefix
        self.name = name
        self.tenant = tenant
        self.role = role
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
        self.digest = digest
    }

    /// Whether the key opens the API at `time`: not revoked, not expired.
    public func isActive(at time: Date) -> Bool {
        revokedAt == nil && (expiresAt.map { $0 > time } ?? true)
    }
}

/// Making, reading and checking API keys.
public enum APIKeys {
    public static let keyPrefix = "trp_"
    static let idLength = 12
    static let secretLength = 40
    static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    /// A new key and its record. The key is shown once; only the record is stored.
    public static func make(
        tenant: String, role: Role, name: String?, expiresAt: Date?, at time: Date
    ) throws(TroupeError) -> (key: String, record: APIKeyRecord) {
        let tenant = try TenantName.validated(tenant)
        if let name, name.count > 200 || name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw TroupeError(
                .invalidInput, "A key's name is at most 200 characters, without control characters.", details: ["field": "name"])
        }
        if let expiresAt, expiresAt <= time {
            throw TroupeError(.invalidInput, "A key's expiry must be in the future.", details: ["field": "expiresIn"])
        }
        var generator = SystemRandomNumberGenerator()
        let characters = (0..<(idLength + secretLength)).map { _ in alphabet[Int(generator.next(upperBound: UInt(alphabet.count)))] }
        let id = String(characters.prefix(idLength))
        let key = keyPrefix + String(characters)
        let record = APIKeyRecord(
            id: "key_" + id, prefix: keyPrefix + id, name: name, tenant: tenant, role: role, createdAt: time, expiresAt: expiresAt,
            digest: TextDigest.sha256Hex(key))
        return (key, record)
    }

    /// A key's lifetime written as a whole number and a unit: `s`, `m`, `h` or `d` (`90d`, `12h`),
    /// at most 10 years.
    public static func lifetime(_ text: String) throws(TroupeError) -> TimeInterval {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        guard let unit = text.last.flatMap({ units[$0] }), let count = Int(text.dropLast()), count > 0,
            Double(count) * unit <= 10 * 366 * 86_400
        else {
            throw TroupeError(
                .invalidInput,
                "A key's lifetime is a whole number and a unit (s, m, h or d), at most 10 years, e.g. 90d (got '\(text.prefix(40))').",
                details: ["field": "expiresIn"])
        }
        return Double(count) * unit
    }

    /// The ID of the record a presented key would have, or `nil` if it is not shaped like a key.
    public static func id(of key: String) -> String? {
        guard key.hasPrefix(keyPrefix) else { return nil }
        let body = key.dropFirst(keyPrefix.count)
        let allowed = Set(alphabet)
        guard body.count == idLength + secretLength, body.allSatisfy(allowed.contains) else { return nil }
        return "key_" + body.prefix(idLength)
    }

    /// Whether `key` is the one `record` was made for: their SHA-256 digests compared in constant time.
    public static func matches(_ key: String, _ record: APIKeyRecord) -> Bool {
        guard let stored = Data(hex: record.digest) else { return false }
        return SHA256.hash(data: Data(key.utf8)) == stored
    }
}

/// SHA-256 of text as lowercase hex: the digests of keys, and of the API's idempotency keys and
/// request bodies.
package enum TextDigest {
    package static func sha256Hex(_ text: String) -> String {
        SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

extension Data {
    fileprivate init?(hex: String) {
        guard hex.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hex.count / 2)
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self.init(bytes)
    }
}

/// Where API keys and tenants are kept: the run stores' own databases (new tables in their
/// migrations), so that keys follow the runs they open.
///
/// Records hold a key's SHA-256 only. Scoped reads take the tenant inside the query.
public protocol KeyStore: Sendable {
    /// Stores a new key's record (and its tenant, if new).
    func createKey(_ record: APIKeyRecord) async throws

    /// The record with this ID, whatever its tenant or state (for checking a presented key).
    func key(id: String) async throws -> APIKeyRecord?

    /// The records of `tenant`'s keys (every tenant's for `nil`), newest first.
    func keys(tenant: String?) async throws -> [APIKeyRecord]

    /// Marks the key revoked at `time` (once: a revoked key keeps its first time). Returns the
    /// record, or `nil` when there is no such key in `tenant` (any tenant for `nil`).
    func revokeKey(id: String, tenant: String?, at time: Date) async throws -> APIKeyRecord?

    /// Records when keys were last used, for many keys in one write.
    func recordKeyUse(_ uses: [String: Date]) async throws
}
