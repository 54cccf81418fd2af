/// Percentiles in milliseconds, as reported.
public struct LatencySummary: Sendable, Codable, Hashable {
    public var count: UInt64
    public var min: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double

    enum CodingKeys: String, CodingKey {
        case count, min, p50, p90, p99, p999 = "p99.9", max, mean
    }
}
