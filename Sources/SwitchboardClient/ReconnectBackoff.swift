/// How long a client waits before its next connection attempt: capped exponential backoff with
/// full jitter, so that clients cut off together (a node drained, a network blip) do not all come
/// back at the same moment.
///
/// Attempt n waits a random time below `min(maximum, minimum × 2ⁿ)`. A drain or rebalance (close
/// codes 3001 and 3002) raises the cap to at least four times the minimum: thousands of clients
/// leave that node at once and should spread out over the others.
public struct ReconnectBackoff: Sendable, Hashable {
    /// The first attempt's cap, in nanoseconds.
    public var minimumNanoseconds: Int64
    /// The largest cap, in nanoseconds.
    public var maximumNanoseconds: Int64
    /// Attempts since the last connection that got its connect reply.
    public private(set) var attempt = 0

    public init(minimumNanoseconds: Int64, maximumNanoseconds: Int64) {
        self.minimumNanoseconds = max(1, minimumNanoseconds)
        self.maximumNanoseconds = max(self.minimumNanoseconds, maximumNanoseconds)
    }

    /// The cap of the next delay, without moving on (`floor`: a cap it must reach at least).
    func cap(floor: Int64 = 0) -> Int64 {
        // 2^attempt saturates well before it could overflow: the shift stays below 63.
        let shift = min(self.attempt, 40)
        let doubled = self.minimumNanoseconds.multipliedReportingOverflow(by: Int64(1) << shift)
        var cap = doubled.overflow ? self.maximumNanoseconds : min(self.maximumNanoseconds, doubled.partialValue)
        if floor > 0 { cap = max(cap, min(self.maximumNanoseconds, floor)) }
        return cap
    }

    /// The next delay in nanoseconds: `random` in `0..<1` scales the cap (full jitter). `drain`: the
    /// node asked clients to leave (3001, 3002).
    public mutating func next(random: Double, drain: Bool = false) -> Int64 {
        let cap = self.cap(floor: drain ? 4 * self.minimumNanoseconds : 0)
        self.attempt = min(self.attempt + 1, 62)
        let r = random.isFinite ? min(max(random, 0), 1) : 0
        let scaled = Double(cap) * r
        // A Double past Int64.max would trap on conversion.
        return scaled >= Double(cap) ? cap : Int64(scaled)
    }

    /// A connection got its connect reply: the next loss starts from the first delay again.
    public mutating func reset() {
        self.attempt = 0
    }
}
