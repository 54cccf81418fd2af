/// When to fetch a JWKS and which keys to use meanwhile: a plain value with injected time.
///
/// - a token naming an unknown `kid` may trigger a fetch, at most once per `unknownKidInterval` (30 s);
/// - the set is refreshed every `refreshInterval` (5 min);
/// - a failed fetch keeps the last good set;
/// - at most one fetch runs at a time.
public struct JWKSCache: Sendable {
    public private(set) var keys: [VerificationKey] = []
    /// When the last fetch started (nanoseconds, monotonic); nil before the first.
    public private(set) var lastAttempt: UInt64?
    /// When the last fetch for an unknown `kid` started (these are limited on their own, so the
    /// periodic refresh does not delay learning a rotated key).
    public private(set) var lastUnknownKidFetch: UInt64?
    /// When the last fetch that succeeded ended.
    public private(set) var lastSuccess: UInt64?
    /// A fetch is under way.
    public private(set) var isFetching = false
    /// Fetches that failed in a row (for logs and metrics).
    public private(set) var consecutiveFailures = 0

    public let unknownKidInterval: UInt64
    public let refreshInterval: UInt64

    public init(unknownKidIntervalSeconds: Double = 30, refreshIntervalSeconds: Double = 300) {
        self.unknownKidInterval = UInt64(max(0, unknownKidIntervalSeconds) * 1e9)
        self.refreshInterval = UInt64(max(1, refreshIntervalSeconds) * 1e9)
    }

    /// Whether a token with an unknown `kid` arriving at `now` should start a fetch (and marks it started).
    public mutating func beginFetchForUnknownKid(now: UInt64) -> Bool {
        guard !self.isFetching else { return false }
        if let last = self.lastUnknownKidFetch, now < last &+ self.unknownKidInterval, now >= last { return false }
        self.isFetching = true
        self.lastAttempt = now
        self.lastUnknownKidFetch = now
        return true
    }

    /// Whether the periodic refresh is due at `now` (and marks it started).
    public mutating func beginScheduledRefresh(now: UInt64) -> Bool {
        guard !self.isFetching else { return false }
        if let last = self.lastAttempt, now < last &+ self.refreshInterval, now >= last { return false }
        self.isFetching = true
        self.lastAttempt = now
        return true
    }

    /// A fetch ended with a new set.
    public mutating func fetchSucceeded(_ keys: [VerificationKey], now: UInt64) {
        self.keys = keys
        self.lastSuccess = now
        self.isFetching = false
        self.consecutiveFailures = 0
    }

    /// A fetch failed: the last good set stays.
    public mutating func fetchFailed(now: UInt64) {
        self.isFetching = false
        self.consecutiveFailures += 1
    }

    /// Keys loaded once (a JWKS file at start).
    public mutating func load(_ keys: [VerificationKey], now: UInt64) {
        self.keys = keys
        self.lastSuccess = now
        self.lastAttempt = now
    }
}
