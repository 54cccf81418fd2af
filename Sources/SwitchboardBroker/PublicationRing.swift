import SwitchboardCore

/// A channel's stored publications, oldest first, in a ring: appending the newest and dropping
/// the oldest are O(1) and reuse the same storage, so a publish into a full history of any size
/// moves nothing (an `Array` with `removeFirst` shifts every entry on every publish). The
/// capacity is a power of two, so a slot is found with a mask rather than a division.
///
/// Expiry times live in an array of their own, beside the publications: the check every publish
/// makes ("has the oldest expired?") reads one `Double` from a dense array, instead of the oldest
/// publication's slot (a cache miss per channel, and a copy of its payload and client info).
struct PublicationRing {
    private var storage: ContiguousArray<Publication?> = []
    /// `expiries[slot]` is when the publication in `storage[slot]` expires.
    private var expiries: ContiguousArray<Double> = []
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { self.count == 0 }

    /// The publication `index` places after the oldest.
    subscript(index: Int) -> Publication {
        precondition(index >= 0 && index < self.count, "index out of range")
        return self.storage[self.slot(index)]!
    }

    /// The storage slot of the entry `index` places after the oldest.
    @inline(__always)
    private func slot(_ index: Int) -> Int {
        (self.head &+ index) & (self.storage.count &- 1)
    }

    /// The offset of the oldest publication (read in place, not copied out).
    var firstOffset: UInt64? { self.isEmpty ? nil : self.storage[self.head]?.offset }

    mutating func append(_ publication: Publication, expiresAt: Double) {
        if self.count == self.storage.count { self.grow() }
        let slot = self.slot(self.count)
        self.storage[slot] = publication
        self.expiries[slot] = expiresAt
        self.count += 1
    }

    /// Drops the `n` oldest entries (at most all of them).
    mutating func removeFirst(_ n: Int) {
        let n = min(max(n, 0), self.count)
        for _ in 0..<n {
            self.storage[self.head] = nil
            self.head = self.slot(1)
        }
        self.count -= n
        if self.count == 0 {
            self.head = 0
            // An emptied history gives its memory back.
            if self.storage.count > 16 {
                self.storage = []
                self.expiries = []
            }
        }
    }

    /// Drops the oldest entries whose time is up (entries expire in order: one TTL per channel).
    mutating func dropExpired(now: Double) {
        var expired = 0
        while expired < self.count, !(self.expiries[self.slot(expired)] > now) { expired += 1 }
        if expired > 0 { self.removeFirst(expired) }
    }

    private mutating func grow() {
        let capacity = max(8, self.storage.count * 2)  // stays a power of two
        var bigger = ContiguousArray<Publication?>(repeating: nil, count: capacity)
        var biggerExpiries = ContiguousArray<Double>(repeating: 0, count: capacity)
        for i in 0..<self.count {
            let slot = self.slot(i)
            swap(&bigger[i], &self.storage[slot])  // moved, not copied
            biggerExpiries[i] = self.expiries[slot]
        }
        self.storage = bigger
        self.expiries = biggerExpiries
        self.head = 0
    }

    /// The address of the storage, for tests that prove publishes neither copy nor reallocate it.
    var storageIdentity: UnsafeRawPointer? {
        self.storage.withUnsafeBufferPointer { $0.baseAddress.map { UnsafeRawPointer($0) } }
    }

    /// Slots allocated.
    var capacity: Int { self.storage.count }
}
