/// Per-connection command rate: a token bucket, plus a count of recent refusals that tells a
/// client that keeps hammering after being told (close 3507) from one that bursts now and then
/// (error 111 and carry on).
///
/// A plain value with injected time (nanoseconds from any monotonic origin): the session owns
/// one and asks it once per command.
public struct CommandRateLimiter: Hashable, Sendable {
    /// What to do with a command.
    public enum Decision: Hashable, Sendable {
        /// Execute it.
        case allow
        /// Answer error 111 and do not execute it.
        case refuse
        /// Too many refusals in the window: close the connection with 3507.
        case close
    }

    /// Commands per second refilled.
    public let rate: Double
    /// Most commands in a burst (the bucket's size).
    public let burst: Double
    /// Refusals within `abuseWindow` beyond which the connection is closed.
    public let abuseRefusals: Int
    /// The window over which refusals are counted, in nanoseconds.
    public let abuseWindow: UInt64

    private var tokens: Double
    private var lastRefill: UInt64
    /// Times of the refusals inside the current window (at most `abuseRefusals + 1` kept).
    private var refusals: [UInt64] = []

    /// Defaults: 100 commands/s, burst 200, more than 20 refusals in 5 s closes.
    public init(rate: Double = 100, burst: Double = 200, abuseRefusals: Int = 20, abuseWindowSeconds: Double = 5, now: UInt64) {
        self.rate = rate.isFinite && rate > 0 ? rate : 100
        self.burst = burst.isFinite && burst >= 1 ? burst : max(1, self.rate)
        self.abuseRefusals = max(0, abuseRefusals)
        self.abuseWindow = UInt64(max(0, min(abuseWindowSeconds, 3600)) * 1e9)
        self.tokens = self.burst
        self.lastRefill = now
    }

    /// Takes one token for a command arriving at `now`.
    public mutating func admit(now: UInt64) -> Decision {
        if now > self.lastRefill {
            let elapsed = Double(now - self.lastRefill) / 1e9
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.lastRefill = now
        }
        if self.tokens >= 1 {
            self.tokens -= 1
            return .allow
        }
        let cutoff = now >= self.abuseWindow ? now - self.abuseWindow : 0
        self.refusals.removeAll { $0 < cutoff }
        self.refusals.append(now)
        if self.refusals.count > self.abuseRefusals + 1 { self.refusals.removeFirst() }
        return self.refusals.count > self.abuseRefusals ? .close : .refuse
    }
}
