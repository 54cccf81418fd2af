/// The Redis broker's pure arithmetic, for the fuzz targets in `Fuzz/` (not API): what a client's
/// offsets, limits and durations become before they reach Redis.
@_spi(Fuzzing)
public enum RedisFuzzingSupport {
    /// `RedisBroker.streamRange(sinceOffset:limit:)`: the first stream id and the count of a history read.
    public static func streamRange(sinceOffset: UInt64?, limit: Int) -> (first: String, count: Int64) {
        RedisBroker.streamRange(sinceOffset: sinceOffset, limit: limit)
    }

    /// `RedisBroker.offset(ofStreamID:)`: the offset in a stream entry id.
    public static func offset(ofStreamID id: String) -> UInt64? {
        RedisBroker.offset(ofStreamID: id)
    }

    /// `RedisBroker.whole(_:maximum:)`: a TTL in whole units within `1...maximum`.
    public static func whole(_ value: Double, maximum: Int64? = nil) -> Int64 {
        RedisBroker.whole(value, maximum: maximum ?? RedisBroker.maximumSeconds)
    }

    /// The longest TTL sent to Redis, in seconds.
    public static var maximumSeconds: Int64 { RedisBroker.maximumSeconds }
}
