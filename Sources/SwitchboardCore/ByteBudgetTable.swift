/// Byte budgets by key (a client address): the `ByteRateBudget` of each key that spent some of its
/// budget lately, in a table bounded in size.
///
/// A key whose bucket has refilled is the same as a key never seen, so it can be forgotten: the
/// table holds only keys whose buckets are not full again. At `maximumKeys` the
/// refilled keys are swept (at most once a second); a new key that still finds the table full is
/// let through untracked, since refusing it would let whoever filled the table refuse everyone
/// else (`untracked` counts how often).
///
/// A plain value with injected time (nanoseconds from any monotonic origin).
public struct ByteBudgetTable: Sendable {
    public let rate: Double
    public let burst: Double
    public let maximumKeys: Int
    private var budgets: [String: ByteRateBudget] = [:]
    private var lastSweep: UInt64?
    /// Reads let through because the table was full.
    public private(set) var untracked = 0

    public init(rate: Double, burst: Double, maximumKeys: Int = 65_536) {
        self.rate = rate
        self.burst = burst
        self.maximumKeys = max(1, maximumKeys)
    }

    public var count: Int { self.budgets.count }

    /// Reserves `bytes` of `key`'s budget for a read starting at `now` (`ByteRateBudget.reserve`).
    public mutating func reserve(_ bytes: Int, for key: String, now: UInt64) -> Bool {
        guard self.budgets[key] != nil || self.hasRoomForKey(now: now) else { return true }
        return self.budgets[key, default: ByteRateBudget(rate: self.rate, burst: self.burst, now: now)].reserve(bytes, now: now)
    }

    /// Settles a read of `key` that reserved `reserved` bytes and returned `used`. A key not in the
    /// table (a read charged only once done, or a key swept meanwhile) starts from a full bucket.
    public mutating func settle(reserved: Int, used: Int, for key: String, now: UInt64) {
        if self.budgets[key] == nil {
            // Nothing to give back to a full bucket; only a charge is worth an entry.
            guard used > reserved, self.hasRoomForKey(now: now) else { return }
        }
        self.budgets[key, default: ByteRateBudget(rate: self.rate, burst: self.burst, now: now)].settle(reserved: reserved, used: used, now: now)
    }

    /// Whether `key` may start a read at `now` (its bucket holds anything): a question that adds
    /// no entry.
    public mutating func allowsRead(for key: String, now: UInt64) -> Bool {
        self.budgets[key]?.reserve(0, now: now) ?? true
    }

    /// Whether a new key may have an entry: at `maximumKeys`, after a sweep; else it goes untracked.
    private mutating func hasRoomForKey(now: UInt64) -> Bool {
        if self.budgets.count >= self.maximumKeys { self.sweep(now: now) }
        guard self.budgets.count < self.maximumKeys else {
            self.untracked &+= 1
            return false
        }
        return true
    }

    /// Forgets the keys whose buckets are full again (at most once a second).
    private mutating func sweep(now: UInt64) {
        if let last = self.lastSweep, now >= last, now - last < 1_000_000_000 { return }
        self.lastSweep = now
        self.budgets = self.budgets.filter { !$0.value.isFull(now: now) }
    }
}
