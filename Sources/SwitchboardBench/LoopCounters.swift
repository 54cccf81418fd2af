/// One event loop's counters. Touched only on its loop (handlers record into
/// it without locks); the runner reads it by submitting to the loop.
final class LoopCounters {
    var counters: BenchCounters
    /// Set when the runner starts closing connections: closes after this are not "dropped".
    var closing = false

    init(seriesEpochNanoseconds: Int64) {
        self.counters = BenchCounters(seriesEpochNanoseconds: seriesEpochNanoseconds)
    }
}

@available(*, unavailable)
extension LoopCounters: Sendable {}
