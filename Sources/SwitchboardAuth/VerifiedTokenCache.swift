import NIOConcurrencyHelpers

/// Tokens whose signature verified recently, so that the same token presented again (every client
/// of a reconnect storm after a drain, a rebalance or a network blip comes back with the token it
/// had) costs a dictionary lookup instead of an RSA or ECDSA verification.
///
/// Only the signature check is skipped. An entry is keyed by the token's exact text and remembers
/// the header (`alg`, `kid`), the decoded payload and the fingerprint of the key that verified it;
/// it is used only while the key the header picks *now* has that fingerprint (a key removed or
/// rotated away makes every entry it verified a miss). The claims (`exp`, `nbf`, `aud`, `iss`, the
/// connection or subscription rules) are checked on every use, against the clock of that use. A
/// token that failed verification is never stored, so a stream of bad tokens costs what it costs
/// without the cache, and cannot push good entries out: only tokens signed by a configured key get in.
///
/// Bounded by entries and by the bytes of the tokens held; when full, the oldest entries go (first
/// in, first out). Shared by a node's event loops behind a lock (held for a dictionary lookup or
/// insert only).
///
/// Eviction goes by age, never by position in the dictionary: evicting "the first entry" empties the
/// low end of the hash table while the high end fills up, and the open-addressing probe chains there
/// grow to thousands of full-token comparisons per lookup (measured: 45 µs of a fresh RS256
/// handshake, a third of the node's CPU).
public final class VerifiedTokenCache: Sendable {
    /// What is kept for one token.
    struct Entry: Sendable {
        var verified: JWTVerifier.Verified
        var keyFingerprint: [UInt8]
    }

    private struct Storage {
        var entries: [String: Entry] = [:]
        /// The tokens held, oldest first from `oldest`: a ring over `order`, each token once.
        var order: [String] = []
        var oldest = 0
        var bytes = 0
        var hits: UInt64 = 0
        var misses: UInt64 = 0
    }

    /// Most tokens held.
    public let maximumEntries: Int
    /// Most bytes of token text held (default 2 MB; the decoded payloads cost a few times that).
    public let maximumBytes: Int
    private let storage = NIOLockedValueBox(Storage())

    public init(maximumEntries: Int = 8192, maximumBytes: Int = 2 << 20) {
        self.maximumEntries = max(1, maximumEntries)
        self.maximumBytes = max(1024, maximumBytes)
    }

    /// Tokens held now.
    public var count: Int { self.storage.withLockedValue { $0.entries.count } }

    /// Lookups answered from the cache, and those that were not.
    public var statistics: (hits: UInt64, misses: UInt64) { self.storage.withLockedValue { ($0.hits, $0.misses) } }

    func entry(for token: String) -> Entry? {
        self.storage.withLockedValue { storage in
            let entry = storage.entries[token]
            if entry == nil { storage.misses &+= 1 } else { storage.hits &+= 1 }
            return entry
        }
    }

    func store(_ entry: Entry, for token: String) {
        let size = token.utf8.count
        guard size <= self.maximumBytes else { return }
        self.storage.withLockedValue { storage in
            // The same token again replaces its entry: its bytes are counted already, its age kept.
            guard storage.entries.updateValue(entry, forKey: token) == nil else { return }
            storage.bytes += size
            storage.order.append(token)
            while storage.entries.count > self.maximumEntries || storage.bytes > self.maximumBytes, storage.oldest < storage.order.count {
                let victim = storage.order[storage.oldest]
                storage.oldest += 1
                if storage.entries.removeValue(forKey: victim) != nil { storage.bytes -= victim.utf8.count }
            }
            // Drop the evicted prefix of the ring once it is half of it (amortized O(1) per insert).
            if storage.oldest > 64, storage.oldest * 2 > storage.order.count {
                storage.order.removeFirst(storage.oldest)
                storage.oldest = 0
            }
        }
    }
}
