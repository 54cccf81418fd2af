/// Per-second figures for charts: what happened in second `t` after the
/// run's epoch (shared by every process of a run, so seconds line up when
/// series from several processes merge).
struct TimeSeries: Sendable, Codable {
    /// Seconds kept at most; events later than that fall into the last second.
    static let maximumSeconds = 86_400

    struct Second: Sendable, Codable, Hashable {
        var established: Int64 = 0
        var deliveries: Int64 = 0
        var published: Int64 = 0
        var latencySumMicros: Double = 0
        var latencyMaxMicros: Int64 = 0

        enum CodingKeys: String, CodingKey {
            case established, deliveries, published, latencySumMicros = "latency_sum_us", latencyMaxMicros = "latency_max_us"
        }

        mutating func merge(_ other: Second) {
            self.established += other.established
            self.deliveries += other.deliveries
            self.published += other.published
            self.latencySumMicros += other.latencySumMicros
            self.latencyMaxMicros = max(self.latencyMaxMicros, other.latencyMaxMicros)
        }
    }

    var epochNanoseconds: Int64
    var seconds: [Second] = []

    init(epochNanoseconds: Int64) {
        self.epochNanoseconds = epochNanoseconds
    }

    private mutating func index(_ nanoseconds: Int64) -> Int {
        let raw = (nanoseconds - self.epochNanoseconds) / 1_000_000_000
        let index = Int(max(0, min(raw, Int64(Self.maximumSeconds - 1))))
        if index >= self.seconds.count {
            self.seconds.append(contentsOf: repeatElement(Second(), count: index + 1 - self.seconds.count))
        }
        return index
    }

    mutating func established(at nanoseconds: Int64) {
        let i = self.index(nanoseconds)
        self.seconds[i].established += 1
    }

    mutating func published(at nanoseconds: Int64) {
        let i = self.index(nanoseconds)
        self.seconds[i].published += 1
    }

    mutating func delivered(at nanoseconds: Int64, latencyNanoseconds: Int64) {
        let i = self.index(nanoseconds)
        let micros = max(0, latencyNanoseconds / 1000)
        self.seconds[i].deliveries += 1
        self.seconds[i].latencySumMicros += Double(micros)
        if micros > self.seconds[i].latencyMaxMicros { self.seconds[i].latencyMaxMicros = micros }
    }

    mutating func merge(_ other: TimeSeries) {
        // series of one run share the epoch; shift if they do not
        let shift = Int((other.epochNanoseconds - self.epochNanoseconds) / 1_000_000_000)
        for (offset, second) in other.seconds.enumerated() {
            let i = max(0, min(offset + shift, Self.maximumSeconds - 1))
            if i >= self.seconds.count {
                self.seconds.append(contentsOf: repeatElement(Second(), count: i + 1 - self.seconds.count))
            }
            self.seconds[i].merge(second)
        }
    }
}
