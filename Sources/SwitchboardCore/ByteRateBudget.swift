/// A client's budget of bytes read from the broker on its behalf (history answers, recoveries): a
/// token bucket counted in bytes. A read may start while the bucket holds anything at all; it
/// reserves a share before it starts (so that reads sent together cannot all start on one full
/// bucket) or nothing (a read charged once done), and is settled with what it did return. The
/// bucket may go below zero: the whole debt is refilled before the next read starts.
///
/// Why: a command is cheap to send and its read can be a megabyte from a shared Redis. The command
/// rate alone let one client make Redis copy 100 answers' worth of history a second, which every
/// client of every node waits behind.
///
/// A plain value with injected time (nanoseconds from any monotonic origin).
public struct ByteRateBudget: Hashable, Sendable {
    /// Bytes per second refilled.
    public let rate: Double
    /// Most bytes in a burst (the bucket's size).
    public let burst: Double

    private var bytes: Double
    private var lastRefill: UInt64

    public init(rate: Double, burst: Double, now: UInt64) {
        self.rate = rate.isFinite && rate > 0 ? rate : 1
        self.burst = burst.isFinite && burst >= 1 ? burst : max(1, self.rate)
        self.bytes = self.burst
        self.lastRefill = now
    }

    /// Reserves `count` bytes for a read starting at `now`: false (nothing reserved) when the
    /// bucket is empty. A reservation may take the bucket below zero: the debt is refilled at the
    /// rate before the next read may start, so what an address reads over time is its rate.
    public mutating func reserve(_ count: Int, now: UInt64) -> Bool {
        self.refill(now: now)
        guard self.bytes > 0 else { return false }
        self.bytes -= Double(max(0, count))
        return true
    }

    /// Settles a read that reserved `reserved` bytes and returned `used`: what it did not use is
    /// given back (what it used past its reservation, taken). A read charged only once done
    /// (a recovery) settles with `reserved` 0.
    public mutating func settle(reserved: Int, used: Int, now: UInt64) {
        self.refill(now: now)
        let unused = Double(max(0, reserved)) - Double(max(0, used))
        self.bytes = min(self.burst, self.bytes + unused)
    }

    /// Whether the bucket is full at `now` (the same as a new one).
    public func isFull(now: UInt64) -> Bool {
        var refilled = self
        refilled.refill(now: now)
        return refilled.bytes >= self.burst
    }

    private mutating func refill(now: UInt64) {
        guard now > self.lastRefill else { return }
        let elapsed = Double(now - self.lastRefill) / 1e9
        self.bytes = min(self.burst, self.bytes + elapsed * self.rate)
        self.lastRefill = now
    }
}
