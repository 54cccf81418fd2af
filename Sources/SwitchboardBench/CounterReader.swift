import NIOCore

/// Reads the per-loop counters by submitting to each loop (one hop per
/// loop per read; the handlers never take a lock).
struct CounterReader: Sendable {
    let loops: [any EventLoop]
    let counters: [NIOLoopBound<LoopCounters>]

    /// Everything, histograms included (for the result).
    func full(seriesEpochNanoseconds: Int64) async -> BenchCounters {
        var total = BenchCounters(seriesEpochNanoseconds: seriesEpochNanoseconds)
        for (loop, bound) in zip(self.loops, self.counters) {
            if let counters = try? await loop.submit({ bound.value.counters }).get() {
                total.merge(counters)
            }
        }
        return total
    }

    /// The cheap counts (for progress and wait loops).
    func progress() async -> ProgressCounts {
        var total = ProgressCounts()
        for (loop, bound) in zip(self.loops, self.counters) {
            if let counts = try? await loop.submit({ bound.value.counters.progress }).get() {
                total = total + counts
            }
        }
        return total
    }

    /// Marks every loop as closing: connections that end from now on are not "dropped".
    func markClosing() async {
        for (loop, bound) in zip(self.loops, self.counters) {
            _ = try? await loop.submit { bound.value.closing = true }.get()
        }
    }
}
