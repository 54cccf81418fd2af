import NIOCore
import SwitchboardCore

/// Idempotency keys of one channel and the result each one got, for a window.
///
/// Bounded: at most `capacity` keys; past it the oldest are forgotten first. Expired keys leave in
/// insertion order, so dropping them costs what expired, not what is stored.
struct IdempotencyTable {
    private var results: [String: (position: StreamPosition, expiresAt: Double)] = [:]
    private var order = CircularBuffer<(key: String, expiresAt: Double)>(initialCapacity: 1)

    var count: Int { self.results.count }
    var isEmpty: Bool { self.results.isEmpty }

    /// The result remembered for `key`, if its window is still open.
    func lookup(_ key: String, now: Double) -> StreamPosition? {
        guard let entry = self.results[key], entry.expiresAt > now else { return nil }
        return entry.position
    }

    mutating func remember(_ key: String, position: StreamPosition, expiresAt: Double, now: Double, capacity: Int) {
        self.dropExpired(now: now)
        while self.results.count >= max(capacity, 1), self.results[key] == nil, let oldest = self.order.popFirst() {
            self.forget(oldest)
        }
        self.results[key] = (position, expiresAt)
        self.order.append((key, expiresAt))
    }

    /// Forgets the keys whose window closed; `releasingStorage` (the broker's sweep) also gives an
    /// emptied table's storage back: not on the publish path, where a window shorter than the
    /// publish interval would free and allocate it again on every keyed publish.
    mutating func dropExpired(now: Double, releasingStorage: Bool = false) {
        while let oldest = self.order.first, !(oldest.expiresAt > now) {
            self.order.removeFirst()
            self.forget(oldest)
        }
        if releasingStorage, self.results.isEmpty {
            // Gives the storage back: a channel's record outlives its keys by up to a day.
            if self.results.capacity > 0 { self.results = [:] }
            if self.order.capacity > 1 { self.order = CircularBuffer(initialCapacity: 1) }
        }
    }

    /// Entries the table has room for without growing, for the test that it gives its storage back.
    var storageCapacity: Int { self.results.capacity + self.order.capacity }

    /// Removes the key only if the order entry is its latest (a key remembered again has a newer one).
    private mutating func forget(_ entry: (key: String, expiresAt: Double)) {
        if let current = self.results[entry.key], current.expiresAt == entry.expiresAt {
            self.results[entry.key] = nil
        }
    }
}
