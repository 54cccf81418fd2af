/// Caps a broker applies to tables keyed by what clients send, so that no client can grow them
/// without bound (issue 10). The server refuses most of these earlier, at parse; the broker keeps
/// itself safe regardless.
public struct BrokerLimits: Sendable, Hashable {
    /// Longest idempotency key, in UTF-8 bytes; a publish with a longer one fails with
    /// `BrokerError.invalidRequest` (the server refuses it first with error 107).
    public var maximumIdempotencyKeyBytes: Int
    /// Idempotency keys remembered per channel within their window; past it the oldest are
    /// forgotten first (the memory broker; Redis keys expire by TTL).
    public var maximumIdempotencyKeysPerChannel: Int
    /// Presence entries per channel; past it new clients are not listed (entries already there are
    /// still refreshed), so one channel's presence answer and table stay bounded.
    public var maximumPresencePerChannel: Int
    /// Longest user name counted per user (`acquireUserConnection`), in UTF-8 bytes: a user name
    /// comes from a token's `sub` (at most 256 bytes there) and names a key or table entry here.
    public var maximumUserBytes: Int
    /// Channel records (epoch, offset, history, idempotency keys) the memory broker holds; past it
    /// the ones published to longest ago are forgotten, channels without subscribers on the node
    /// first (Redis is bounded by its own `maxmemory` instead).
    public var maximumChannelRecords: Int
    /// Bytes the memory broker keeps in history, all channels together (each publication's data and
    /// `PublicationRing.entryOverhead`); past
    /// it the histories of the channels published to longest ago are dropped (channels without
    /// subscribers on the node first; their positions stay, so recovering from them answers
    /// `recovered: false`). Redis is bounded by its own `maxmemory` instead.
    public var maximumHistoryBytes: Int

    /// Defaults: keys of 128 bytes, 10,000 idempotency keys and 10,000 presence entries per
    /// channel, user names of 256 bytes, a million channel records, 1 GiB of history.
    public init(
        maximumIdempotencyKeyBytes: Int = 128,
        maximumIdempotencyKeysPerChannel: Int = 10_000,
        maximumPresencePerChannel: Int = 10_000,
        maximumUserBytes: Int = 256,
        maximumChannelRecords: Int = 1_000_000,
        maximumHistoryBytes: Int = 1 << 30
    ) {
        self.maximumChannelRecords = max(1, maximumChannelRecords)
        self.maximumHistoryBytes = max(1, maximumHistoryBytes)
        self.maximumIdempotencyKeyBytes = maximumIdempotencyKeyBytes
        self.maximumIdempotencyKeysPerChannel = maximumIdempotencyKeysPerChannel
        self.maximumPresencePerChannel = maximumPresencePerChannel
        self.maximumUserBytes = maximumUserBytes
    }
}
