import NIOCore
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
    /// What a slot keeps of a publication: its offset follows from its place (offsets in a ring are
    /// consecutive), and its client info is shared with the entry before it when the same client
    /// published both. 40 bytes a slot, where a whole `Publication` took 120: a node keeps
    /// history for every channel it publishes on, and the smaller the slots, the less of the rest
    /// of the node's working set each publish pushes out of the cache.
    private struct Slot {
        var data: ByteBuffer
        var info: SharedClientInfo?
        var time: UInt64
    }

    private var storage: ContiguousArray<Slot?> = []
    /// `expiries[slot]` is when the publication in `storage[slot]` expires.
    private var expiries: ContiguousArray<Double> = []
    private var head = 0
    private(set) var count = 0
    /// What the stored publications take, in bytes: their data and `entryOverhead` each (what the
    /// broker's history budget counts; counting the data alone, a flood of 1-byte publications
    /// took a hundred times what the budget saw).
    private(set) var bytes = 0

    /// Memory a stored publication takes beside its data: its slot and expiry (48 bytes) and the
    /// data's own heap storage (about 48).
    static let entryOverhead = 96
    /// The offset of the entry at `head` (meaningful when `count > 0`).
    private var headOffset: UInt64 = 0

    var isEmpty: Bool { self.count == 0 }

    /// The publication `index` places after the oldest.
    subscript(index: Int) -> Publication {
        precondition(index >= 0 && index < self.count, "index out of range")
        let slot = self.storage[self.slot(index)]!
        return Publication(offset: self.headOffset &+ UInt64(index), data: slot.data, info: slot.info?.value, time: slot.time)
    }

    /// The storage slot of the entry `index` places after the oldest.
    @inline(__always)
    private func slot(_ index: Int) -> Int {
        (self.head &+ index) & (self.storage.count &- 1)
    }

    /// The offset of the oldest publication.
    var firstOffset: UInt64? { self.isEmpty ? nil : self.headOffset }

    /// Appends `publication`, whose offset must follow the newest entry's (any offset when the ring
    /// is empty). One that does not (a broken caller) replaces the whole history rather than
    /// leaving offsets that do not match their places.
    mutating func append(_ publication: Publication, expiresAt: Double) {
        if self.count > 0, publication.offset != self.headOffset &+ UInt64(self.count) {
            assertionFailure("offset \(publication.offset) after \(self.headOffset &+ UInt64(self.count) &- 1)")
            self.removeFirst(self.count)
        }
        if self.count == self.storage.count { self.grow() }
        if self.count == 0 { self.headOffset = publication.offset }
        var info: SharedClientInfo?
        if let value = publication.info {
            // The newest entry's info, when the same client published again.
            if self.count > 0, let last = self.storage[self.slot(self.count &- 1)]?.info, last.value == value {
                info = last
            } else {
                info = SharedClientInfo(value)
            }
        }
        let slot = self.slot(self.count)
        self.storage[slot] = Slot(data: publication.data, info: info, time: publication.time)
        self.expiries[slot] = expiresAt
        self.count += 1
        self.bytes &+= publication.data.readableBytes &+ Self.entryOverhead
    }

    /// Drops the `n` oldest entries (at most all of them).
    mutating func removeFirst(_ n: Int) {
        let n = min(max(n, 0), self.count)
        for _ in 0..<n {
            self.bytes &-= (self.storage[self.head]?.data.readableBytes).map { $0 &+ Self.entryOverhead } ?? 0
            self.storage[self.head] = nil
            self.head = self.slot(1)
        }
        self.count -= n
        self.headOffset &+= UInt64(n)
        if self.count == 0 {
            self.head = 0
            self.bytes = 0
            // An emptied history gives its memory back (a record outlives its history by up to
            // `metaTTL`, a day: 16 kept slots were 800 bytes per such channel).
            if !self.storage.isEmpty {
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
        var bigger = ContiguousArray<Slot?>(repeating: nil, count: capacity)
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

    /// Bytes per slot, for the test that keeps slots small.
    static var slotStride: Int { MemoryLayout<Slot?>.stride }

    /// Which shared info the entry `index` places after the oldest holds, for tests.
    func infoIdentity(_ index: Int) -> ObjectIdentifier? {
        self.storage[self.slot(index)]?.info.map(ObjectIdentifier.init)
    }
}
