import NIOCore

/// Which long-poll presence entries an event loop wrote lately, so that a poller that polls often (a
/// busy channel answers every poll at once) costs a broker write per channel only once half of its
/// entry's time is used up, not once per poll. A plain value, one per loop (no lock); bounded: past
/// `capacity` entries it forgets them all (the cost is writes, never a missing entry).
struct PollPresenceThrottle {
    let capacity: Int
    /// When each (channel, poller) entry written from this loop expires.
    private var expiries: [Key: NIODeadline] = [:]

    private struct Key: Hashable {
        var channel: String
        var poller: String
    }

    init(capacity: Int = 50_000) {
        self.capacity = capacity
    }

    var count: Int { self.expiries.count }

    /// Whether to write `poller`'s entry in `channel` for `ttl` now: when this loop has not, or more
    /// than half of the time it wrote is used up. A true answer counts as the write.
    mutating func shouldWrite(channel: String, poller: String, ttl: TimeAmount, now: NIODeadline) -> Bool {
        let key = Key(channel: channel, poller: poller)
        if let expiry = self.expiries[key], (expiry - now).nanoseconds > ttl.nanoseconds / 2 { return false }
        if self.expiries[key] == nil, self.expiries.count >= self.capacity {
            self.expiries.removeAll(keepingCapacity: true)
        }
        self.expiries[key] = now + ttl
        return true
    }

    /// Forgets entries that expired (the loop's sweep calls it).
    mutating func dropExpired(now: NIODeadline) {
        self.expiries = self.expiries.filter { $0.value > now }
    }
}
