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

    /// Pollers listed in presence from this loop, by address, and when each one's entries expire.
    private var pollersByAddress: [String: [String: NIODeadline]] = [:]
    private var pollerCount = 0

    /// Whether `poller` (from `address`) may be listed in presence: it is listed already, or its
    /// address lists fewer than `most` pollers whose entries are still alive. A true answer lists
    /// it until `now + ttl`. Bounded like the entries: past `capacity` pollers it forgets them all.
    mutating func admitsPoller(_ poller: String, address: String, most: Int, ttl: TimeAmount, now: NIODeadline) -> Bool {
        var pollers = self.pollersByAddress.removeValue(forKey: address) ?? [:]
        defer { if !pollers.isEmpty { self.pollersByAddress[address] = pollers } }
        if pollers[poller] == nil, pollers.count >= most {
            let before = pollers.count
            pollers = pollers.filter { $0.value > now }
            self.pollerCount -= before - pollers.count
            if pollers.count >= most { return false }
        }
        if pollers[poller] == nil {
            if self.pollerCount >= self.capacity {
                self.pollersByAddress.removeAll(keepingCapacity: true)
                self.pollerCount = pollers.count
            }
            self.pollerCount += 1
        }
        pollers[poller] = max(pollers[poller] ?? now, now + ttl)
        return true
    }

    /// Pollers listed from this loop now.
    var pollers: Int { self.pollerCount }

    /// Forgets entries that expired (the loop's sweep calls it).
    mutating func dropExpired(now: NIODeadline) {
        self.expiries = self.expiries.filter { $0.value > now }
        self.pollersByAddress = self.pollersByAddress.compactMapValues { pollers in
            let live = pollers.filter { $0.value > now }
            return live.isEmpty ? nil : live
        }
        self.pollerCount = self.pollersByAddress.values.reduce(0) { $0 + $1.count }
    }
}
