import NIOCore
import SwitchboardCore

/// One channel's record in the memory broker: epoch, top offset, stored publications and
/// idempotency keys. Only publishes create one; reads never do. Mutated in place in the broker's
/// table (never copied out and written back, which would copy the whole history per publish).
struct ChannelHistory {
    /// Meaningful once `top > 0`.
    var epoch = ""
    var top: UInt64 = 0
    var entries = PublicationRing()
    var lastPublish: Double = 0
    var idempotency = IdempotencyTable()

    /// Meta (epoch, top offset) is forgotten `metaTTL` after the last publication.
    func isStale(now: Double, metaTTL: Double) -> Bool {
        self.top > 0 && !(self.lastPublish + metaTTL > now)
    }

    /// Holds nothing worth keeping: no live history position, no idempotency key in its window.
    func isEmpty(now: Double, metaTTL: Double) -> Bool {
        (self.top == 0 || self.isStale(now: now, metaTTL: metaTTL)) && self.idempotency.isEmpty
    }

    /// Stores `publication` under the next offset and returns its position. A stale record starts
    /// over (meta, history and idempotency keys forgotten); a record's first publication takes
    /// `newEpoch`.
    mutating func append(
        _ publication: Publication, expiresAt: Double, maximumCount: Int, now: Double, metaTTL: Double,
        newEpoch: @autoclosure () -> String, storedBytesChange: inout Int
    ) -> StreamPosition {
        let storedBefore = self.entries.bytes
        defer { storedBytesChange = self.entries.bytes &- storedBefore }
        if self.isStale(now: now, metaTTL: metaTTL) { self = ChannelHistory() }
        if self.top == 0 { self.epoch = newEpoch() }
        self.top &+= 1
        var stored = publication
        stored.offset = self.top
        self.entries.append(stored, expiresAt: expiresAt)
        self.trim(maximumCount: maximumCount, now: now)
        self.lastPublish = now
        return StreamPosition(offset: self.top, epoch: self.epoch)
    }

    mutating func trim(maximumCount: Int, now: Double) {
        self.entries.dropExpired(now: now)
        if self.entries.count > maximumCount {
            self.entries.removeFirst(self.entries.count - maximumCount)
        }
    }

    /// Publications after `since` (all when nil), oldest or newest first, at most `limit` (negative: all).
    /// Costs what it returns: stored offsets are consecutive, so the start is computed, not searched.
    func read(since: UInt64?, limit: Int, reverse: Bool) -> [Publication] {
        guard limit != 0, let oldest = self.entries.firstOffset else { return [] }
        var start = 0
        if let since {
            guard since < self.top else { return [] }
            if since >= oldest { start = Int(since - oldest) + 1 }
        }
        let available = self.entries.count - start
        guard available > 0 else { return [] }
        let count = limit > 0 ? min(limit, available) : available
        var publications: [Publication] = []
        publications.reserveCapacity(count)
        if reverse {
            for i in stride(from: self.entries.count - 1, to: self.entries.count - 1 - count, by: -1) {
                publications.append(self.entries[i])
            }
        } else {
            for i in start..<(start + count) { publications.append(self.entries[i]) }
        }
        return publications
    }
}
