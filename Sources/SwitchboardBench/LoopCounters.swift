/// One event loop's counters. Touched only on its loop (handlers record into
/// it without locks); the runner reads it by submitting to the loop.
final class LoopCounters {
    var counters: BenchCounters
    /// Set when the runner starts closing connections: closes after this are not "dropped".
    var closing = false
    /// pingpong: loops may publish their next round trip (cleared to stop the run).
    var pingPongOpen = false
    /// pingpong: round trips this event loop may start in all (its share of `--max-round-trips`).
    var pingPongBudget: Int64 = 0

    init(seriesEpochNanoseconds: Int64) {
        self.counters = BenchCounters(seriesEpochNanoseconds: seriesEpochNanoseconds)
    }
}

@available(*, unavailable)
extension LoopCounters: Sendable {}
