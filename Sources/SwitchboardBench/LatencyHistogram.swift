import Histogram

/// A latency distribution: an HdrHistogram (3 significant digits, in
/// microseconds, up to an hour) plus the exact minimum, maximum and sum in
/// nanoseconds.
///
/// Histograms from several event loops or processes merge exactly: the
/// JSON form lists every non-empty bucket as `[value, count]`, with the value
/// being the bucket's highest equivalent value, so recording it again lands
/// in the same bucket.
struct LatencyHistogram: Sendable {
    static let highestTrackableMicroseconds: UInt64 = 3_600_000_000

    private(set) var histogram = Histogram<UInt64>(
        lowestDiscernibleValue: 1,
        highestTrackableValue: LatencyHistogram.highestTrackableMicroseconds,
        numberOfSignificantValueDigits: .three
    )
    private(set) var count: UInt64 = 0
    private(set) var minimumNanoseconds: Int64 = .max
    private(set) var maximumNanoseconds: Int64 = 0
    private(set) var sumNanoseconds: Double = 0

    init() {}

    /// Records one sample; negative values (clock steps) count as zero.
    mutating func record(nanoseconds: Int64) {
        let value = max(0, nanoseconds)
        let micros = min(UInt64(value / 1000), Self.highestTrackableMicroseconds)
        self.histogram.record(micros)
        self.count += 1
        self.sumNanoseconds += Double(value)
        if value < self.minimumNanoseconds { self.minimumNanoseconds = value }
        if value > self.maximumNanoseconds { self.maximumNanoseconds = value }
    }

    mutating func merge(_ other: LatencyHistogram) {
        guard other.count > 0 else { return }
        self.histogram.add(other.histogram)
        self.count += other.count
        self.sumNanoseconds += other.sumNanoseconds
        self.minimumNanoseconds = min(self.minimumNanoseconds, other.minimumNanoseconds)
        self.maximumNanoseconds = max(self.maximumNanoseconds, other.maximumNanoseconds)
    }

    /// The value at `percentile` (0...100) in milliseconds: the top of its
    /// bucket, kept within the exact minimum and maximum. Taking the bucket's
    /// highest equivalent value (rather than the library's clamp to its own
    /// recorded maximum) gives the same answer for a merged histogram as for
    /// one that saw every sample.
    func milliseconds(atPercentile percentile: Double) -> Double {
        guard self.count > 0 else { return 0 }
        guard percentile > 0 else { return self.minimumMilliseconds }
        guard percentile < 100 else { return self.maximumMilliseconds }
        let micros = self.histogram.highestEquivalentForValue(self.histogram.valueAtPercentile(percentile))
        let nanos = Int64(clamping: micros) &* 1000
        return Double(min(max(nanos, self.minimumNanoseconds), self.maximumNanoseconds)) / 1e6
    }

    var maximumMilliseconds: Double { self.count > 0 ? Double(self.maximumNanoseconds) / 1e6 : 0 }
    var minimumMilliseconds: Double { self.count > 0 ? Double(self.minimumNanoseconds) / 1e6 : 0 }
    var meanMilliseconds: Double { self.count > 0 ? self.sumNanoseconds / Double(self.count) / 1e6 : 0 }

    /// The headline percentiles.
    var summary: LatencySummary {
        LatencySummary(
            count: self.count,
            min: Self.round(self.minimumMilliseconds),
            p50: Self.round(self.milliseconds(atPercentile: 50)),
            p90: Self.round(self.milliseconds(atPercentile: 90)),
            p99: Self.round(self.milliseconds(atPercentile: 99)),
            p999: Self.round(self.milliseconds(atPercentile: 99.9)),
            max: Self.round(self.maximumMilliseconds),
            mean: Self.round(self.meanMilliseconds)
        )
    }

    /// Non-empty buckets as (highest equivalent value in µs, count), ascending.
    var buckets: [(micros: UInt64, count: UInt64)] {
        self.histogram.recordedValues().map { ($0.value, $0.count) }
    }

    /// Rounds to 4 significant digits (3 are exact; the 4th shows the bucket).
    static func round(_ value: Double) -> Double {
        guard value > 0, value.isFinite else { return 0 }
        let magnitude = (value.magnitude).log10Floor
        let scale = pow10(3 - magnitude)
        return (value * scale).rounded() / scale
    }

    private static func pow10(_ exponent: Int) -> Double {
        var result = 1.0
        if exponent >= 0 { for _ in 0..<exponent { result *= 10 } } else { for _ in 0..<(-exponent) { result /= 10 } }
        return result
    }
}

extension Double {
    /// floor(log10(self)) for positive values, without Foundation.
    fileprivate var log10Floor: Int {
        var exponent = 0
        var value = self
        while value >= 10 { value /= 10; exponent += 1 }
        while value < 1 { value *= 10; exponent -= 1 }
        return exponent
    }
}

extension LatencyHistogram: Codable {
    private enum CodingKeys: String, CodingKey {
        case count, minNs = "min_ns", maxNs = "max_ns", sumNs = "sum_ns", unit, buckets
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init()
        let count = try container.decode(UInt64.self, forKey: .count)
        guard count > 0 else { return }
        self.count = count
        self.minimumNanoseconds = try container.decode(Int64.self, forKey: .minNs)
        self.maximumNanoseconds = try container.decode(Int64.self, forKey: .maxNs)
        self.sumNanoseconds = try container.decode(Double.self, forKey: .sumNs)
        let buckets = try container.decode([[UInt64]].self, forKey: .buckets)
        for pair in buckets where pair.count == 2 {
            self.histogram.record(min(pair[0], Self.highestTrackableMicroseconds), count: pair[1])
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.count, forKey: .count)
        guard self.count > 0 else { return }
        try container.encode(self.minimumNanoseconds, forKey: .minNs)
        try container.encode(self.maximumNanoseconds, forKey: .maxNs)
        try container.encode(self.sumNanoseconds, forKey: .sumNs)
        try container.encode("us", forKey: .unit)
        try container.encode(self.buckets.map { [$0.micros, $0.count] }, forKey: .buckets)
    }
}
