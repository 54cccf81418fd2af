import SwitchboardCore

/// A channel's stored publications, oldest first, in a ring: appending the newest and dropping
/// the oldest are O(1) and reuse the same storage, so a publish into a full history of any size
/// moves nothing (an `Array` with `removeFirst` shifts every entry on every publish). The
/// capacity is a power of two, so a slot is found with a mask rather than a division.
struct PublicationRing {
    struct Entry {
        var publication: Publication
        var expiresAt: Double
    }

    private var storage: ContiguousArray<Entry?> = []
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { self.count == 0 }

    /// The entry `index` places after the oldest.
    subscript(index: Int) -> Entry {
        precondition(index >= 0 && index < self.count, "index out of range")
        return self.storage[self.slot(index)]!
    }

    /// The storage slot of the entry `index` places after the oldest.
    @inline(__always)
    private func slot(_ index: Int) -> Int {
        (self.head &+ index) & (self.storage.count &- 1)
    }

    var first: Entry? { self.isEmpty ? nil : self[0] }

    mutating func append(_ entry: Entry) {
        if self.count == self.storage.count { self.grow() }
        self.storage[self.slot(self.count)] = entry
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
            if self.storage.count > 16 { self.storage = [] }
        }
    }

    /// Drops the oldest entries whose time is up (entries expire in order: one TTL per channel).
    mutating func dropExpired(now: Double) {
        var expired = 0
        // Reads the one field in place: copying an entry out would retain and release its payload.
        while expired < self.count, !((self.storage[self.slot(expired)]?.expiresAt ?? .infinity) > now) { expired += 1 }
        self.removeFirst(expired)
    }

    private mutating func grow() {
        let capacity = max(8, self.storage.count * 2)  // stays a power of two
        var bigger = ContiguousArray<Entry?>(repeating: nil, count: capacity)
        for i in 0..<self.count { bigger[i] = self.storage[self.slot(i)] }
        self.storage = bigger
        self.head = 0
    }

    /// The address of the storage, for tests that prove publishes neither copy nor reallocate it.
    var storageIdentity: UnsafeRawPointer? {
        self.storage.withUnsafeBufferPointer { $0.baseAddress.map { UnsafeRawPointer($0) } }
    }

    /// Slots allocated.
    var capacity: Int { self.storage.count }
}
