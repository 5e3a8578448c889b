public import Foundation
import Synchronization

/// How many requests a second the API takes from one key and from one tenant (all its keys
/// together): token buckets that hold `burst` requests and refill at the rate. Over it, a
/// request is answered 429 with `Retry-After`. A rate of 0 means no limit.
public struct RequestRates: Sendable, Hashable {
    public var perKey: Double
    public var perKeyBurst: Int
    public var perTenant: Double
    public var perTenantBurst: Int

    public init(perKey: Double = 20, perKeyBurst: Int = 40, perTenant: Double = 50, perTenantBurst: Int = 100) {
        self.perKey = perKey
        self.perKeyBurst = perKeyBurst
        self.perTenant = perTenant
        self.perTenantBurst = perTenantBurst
    }

    /// No limit at all.
    public static let unlimited = RequestRates(perKey: 0, perKeyBurst: 0, perTenant: 0, perTenantBurst: 0)
}

/// What one tenant's runs created through the API may be given (`tenants.NAME.*` settings).
public struct TenantRunLimits: Sendable, Hashable {
    /// The most steps a plan of its runs may have (requests asking for more are refused).
    public var maxSteps: Int?
    /// The longest tool output its runs' models are sent, in characters.
    public var maxToolOutputCharacters: Int?

    public init(maxSteps: Int? = nil, maxToolOutputCharacters: Int? = nil) {
        self.maxSteps = maxSteps
        self.maxToolOutputCharacters = maxToolOutputCharacters
    }
}

/// Token buckets by name (`key:ID`, `tenant:NAME`), in memory: each node of a fleet limits what
/// it serves.
final class TokenBuckets: Sendable {
    /// One bucket to take from: its name, its rate (tokens a second; 0: no limit) and how many it holds.
    struct Rule: Sendable {
        var name: String
        var rate: Double
        var burst: Int
        var capacity: Double { Double(max(burst, 1)) }
    }

    private struct Bucket {
        var tokens: Double
        var at: Date
        var rate: Double
        var capacity: Double

        /// The bucket as it stands at `now`.
        func refilled(at now: Date) -> Bucket {
            var bucket = self
            bucket.tokens = min(capacity, tokens + max(0, now.timeIntervalSince(at)) * rate)
            bucket.at = now
            return bucket
        }
    }

    private let buckets = Mutex<[String: Bucket]>([:])
    /// Buckets kept before full ones (which a new bucket would equal) are dropped.
    static let pruneAbove = 10_000

    /// Takes a token from each bucket of `rules` if every one has a token (and from none
    /// otherwise); `nil` then, else the rule that refused and the seconds until it has a token.
    func take(_ rules: [Rule], at now: Date) -> (rule: Rule, wait: Double)? {
        let rules = rules.filter { $0.rate > 0 }
        guard !rules.isEmpty else { return nil }
        return buckets.withLock { buckets in
            var taken: [(String, Bucket)] = []
            for rule in rules {
                var bucket = (buckets[rule.name] ?? Bucket(tokens: rule.capacity, at: now, rate: rule.rate, capacity: rule.capacity))
                bucket.rate = rule.rate
                bucket.capacity = rule.capacity
                bucket = bucket.refilled(at: now)
                guard bucket.tokens >= 1 else { return (rule, (1 - bucket.tokens) / rule.rate) }
                bucket.tokens -= 1
                taken.append((rule.name, bucket))
            }
            for (name, bucket) in taken { buckets[name] = bucket }
            if buckets.count > Self.pruneAbove, Int.random(in: 0..<1_000) == 0 {
                // Now and then, not on every request: the filter walks every bucket.
                buckets = buckets.filter { $0.value.refilled(at: now).tokens < $0.value.capacity }
            }
            return nil
        }
    }
}

/// Event streams open now, by key: a key may hold only so many at once.
final class StreamCounter: Sendable {
    private let open = Mutex<[String: Int]>([:])

    /// A slot for one more stream of `key`, released when the slot is (the stream ended); `nil`
    /// when `key` holds `limit` already.
    func slot(for key: String, limit: Int) -> Slot? {
        let taken = open.withLock { open in
            guard open[key, default: 0] < limit else { return false }
            open[key, default: 0] += 1
            return true
        }
        return taken ? Slot(counter: self, key: key) : nil
    }

    func count(of key: String) -> Int { open.withLock { $0[key] ?? 0 } }

    fileprivate func release(_ key: String) {
        open.withLock { open in
            open[key, default: 1] -= 1
            if open[key] == 0 { open[key] = nil }
        }
    }

    /// One open stream; gives its place back when released.
    final class Slot: Sendable {
        let counter: StreamCounter
        let key: String

        fileprivate init(counter: StreamCounter, key: String) {
            self.counter = counter
            self.key = key
        }

        deinit { counter.release(key) }
    }
}
