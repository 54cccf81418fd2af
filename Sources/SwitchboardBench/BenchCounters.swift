/// What one event loop (or one process, or a whole run once merged)
/// counted. Counters add, timestamps take min/max, histograms and series
/// merge exactly.
struct BenchCounters: Sendable, Codable {
    // connections
    var attempted: Int64 = 0
    var connected: Int64 = 0
    var failed: Int64 = 0
    /// Closed by the server after being established.
    var dropped: Int64 = 0
    /// Error replies, disconnect or unsubscribe pushes and the like.
    var errors: Int64 = 0
    /// Server pings (`{}`) answered.
    var pings: Int64 = 0
    var subscribed: Int64 = 0
    var subscribeErrors: Int64 = 0
    var connectStartNanoseconds: Int64 = 0
    var connectEndNanoseconds: Int64 = 0
    var handshake = LatencyHistogram()

    // publications
    var published: Int64 = 0
    var publishAcks: Int64 = 0
    var publishErrors: Int64 = 0
    var publishStartNanoseconds: Int64 = 0
    var publishEndNanoseconds: Int64 = 0
    var expected: Int64 = 0
    var delivered: Int64 = 0
    /// Subscribers that received a warm-up publication.
    var warmed: Int64 = 0
    /// A delivery whose seq is not above the last one from the same publisher on that connection.
    var outOfOrder: Int64 = 0
    /// A publication whose offset is not the previous one + 1 on that connection.
    var gaps: Int64 = 0
    /// Publications without a readable seq or ts.
    var unparsed: Int64 = 0
    var firstDeliveryNanoseconds: Int64 = 0
    var lastDeliveryNanoseconds: Int64 = 0
    var latency = LatencyHistogram()

    // pingpong (sends are `published`, matched echoes are `delivered`)
    /// Round trips given up after `--rt-timeout` (the loop then sent the next).
    var roundTripTimeouts: Int64 = 0
    /// Echoes of a seq already matched.
    var duplicateEchoes: Int64 = 0
    /// Echoes that came back after their round trip timed out.
    var lateEchoes: Int64 = 0
    /// Echoes of a seq this connection never sent.
    var unexpectedEchoes: Int64 = 0
    /// Publications from other connections on a shared channel (not this loop's).
    var foreignEchoes: Int64 = 0
    /// Round trips completed inside the measured window, and the window (wall clock ns).
    var measuredRoundTrips: Int64 = 0
    var measureStartNanoseconds: Int64 = 0
    var measureEndNanoseconds: Int64 = 0

    var series: TimeSeries
    /// The first few error texts, for the report.
    var errorSamples: [String] = []

    init(seriesEpochNanoseconds: Int64) {
        self.series = TimeSeries(epochNanoseconds: seriesEpochNanoseconds)
    }

    mutating func noteError(_ text: String) {
        self.errors += 1
        if self.errorSamples.count < 5 { self.errorSamples.append(String(text.prefix(300))) }
    }

    /// One measured delivery (a single access to the loop's counters).
    mutating func recordDelivery(at now: Int64, latency: Int64?, outOfOrder: Bool, gap: Bool) {
        self.delivered += 1
        if let latency {
            self.latency.record(nanoseconds: latency)
        } else {
            self.unparsed += 1
        }
        self.series.delivered(at: now, latencyNanoseconds: latency ?? 0)
        if outOfOrder { self.outOfOrder += 1 }
        if gap { self.gaps += 1 }
        if self.firstDeliveryNanoseconds == 0 || now < self.firstDeliveryNanoseconds { self.firstDeliveryNanoseconds = now }
        if now > self.lastDeliveryNanoseconds { self.lastDeliveryNanoseconds = now }
    }

    /// Keeps a connection failure's text for the report (not a server error).
    mutating func noteFailure(_ text: String) {
        if self.errorSamples.count < 5 { self.errorSamples.append(String(text.prefix(300))) }
    }

    mutating func merge(_ other: BenchCounters) {
        self.attempted += other.attempted
        self.connected += other.connected
        self.failed += other.failed
        self.dropped += other.dropped
        self.errors += other.errors
        self.pings += other.pings
        self.subscribed += other.subscribed
        self.subscribeErrors += other.subscribeErrors
        Self.minNonZero(&self.connectStartNanoseconds, other.connectStartNanoseconds)
        Self.maxOf(&self.connectEndNanoseconds, other.connectEndNanoseconds)
        self.handshake.merge(other.handshake)
        self.published += other.published
        self.publishAcks += other.publishAcks
        self.publishErrors += other.publishErrors
        Self.minNonZero(&self.publishStartNanoseconds, other.publishStartNanoseconds)
        Self.maxOf(&self.publishEndNanoseconds, other.publishEndNanoseconds)
        self.expected += other.expected
        self.delivered += other.delivered
        self.warmed += other.warmed
        self.outOfOrder += other.outOfOrder
        self.gaps += other.gaps
        self.unparsed += other.unparsed
        Self.minNonZero(&self.firstDeliveryNanoseconds, other.firstDeliveryNanoseconds)
        Self.maxOf(&self.lastDeliveryNanoseconds, other.lastDeliveryNanoseconds)
        self.latency.merge(other.latency)
        self.roundTripTimeouts += other.roundTripTimeouts
        self.duplicateEchoes += other.duplicateEchoes
        self.lateEchoes += other.lateEchoes
        self.unexpectedEchoes += other.unexpectedEchoes
        self.foreignEchoes += other.foreignEchoes
        self.measuredRoundTrips += other.measuredRoundTrips
        Self.minNonZero(&self.measureStartNanoseconds, other.measureStartNanoseconds)
        Self.maxOf(&self.measureEndNanoseconds, other.measureEndNanoseconds)
        self.series.merge(other.series)
        for sample in other.errorSamples where self.errorSamples.count < 5 {
            self.errorSamples.append(sample)
        }
    }

    static func minNonZero(_ value: inout Int64, _ other: Int64) {
        if other != 0, value == 0 || other < value { value = other }
    }

    static func maxOf(_ value: inout Int64, _ other: Int64) {
        if other > value { value = other }
    }

    /// The counts a progress line shows (cheap to copy: no histograms).
    var progress: ProgressCounts {
        ProgressCounts(
            attempted: self.attempted, connected: self.connected, failed: self.failed, dropped: self.dropped,
            subscribed: self.subscribed, subscribeErrors: self.subscribeErrors, warmed: self.warmed, published: self.published, delivered: self.delivered,
            errors: self.errors, timedOutRoundTrips: self.roundTripTimeouts
        )
    }
}
