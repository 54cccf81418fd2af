/// The hub's outgoing work per event loop within one tick: each loop gets its
/// operations as one batch, and publications of one channel that follow each
/// other are merged into one `PublicationBatch` (one message per subscriber).
/// Answers to publishes (`.publishResult`) wait apart and go last, so they
/// never split a run of one channel's publications, and a publisher's reply
/// and its publication's echo leave in one flush.
/// A plain value owned by a hub shard.
struct FanoutBatcher {
    private var opsByLoop: [[FanoutOp]]
    private var resultsByLoop: [[FanoutOp]]
    private var waiting = 0

    init(loopCount: Int) {
        self.opsByLoop = Array(repeating: [], count: loopCount)
        self.resultsByLoop = Array(repeating: [], count: loopCount)
    }

    /// Whether nothing waits.
    var isEmpty: Bool { self.waiting == 0 }

    /// Adds an operation for `loop`; returns true when it is the first of this tick (schedule a flush).
    mutating func enqueue(_ op: FanoutOp, loop: Int) -> Bool {
        let wasEmpty = self.isEmpty
        self.waiting += 1
        if case .publishResult = op {
            self.resultsByLoop[loop].append(op)
            return wasEmpty
        }
        if case .publication(let name, let offset, let time, let message) = op, let lastIndex = self.opsByLoop[loop].indices.last {
            // Read in place: `.last` would copy the operation out (a retain and a release of its payload).
            switch self.opsByLoop[loop][lastIndex] {
            case .publication(let lastName, let lastOffset, let lastTime, let lastMessage) where lastName == name:
                let batch = PublicationBatch(channel: name, first: (lastOffset, lastTime, lastMessage))
                if batch.append(offset: offset, time: time, message: message) {
                    self.opsByLoop[loop][self.opsByLoop[loop].count - 1] = .batch(batch)
                    return wasEmpty
                }
            case .batch(let batch) where batch.channel == name:
                if batch.append(offset: offset, time: time, message: message) { return wasEmpty }
            default:
                break
            }
        }
        self.opsByLoop[loop].append(op)
        return wasEmpty
    }

    /// Takes every loop's operations and, apart, its publish answers, which go after them (loops
    /// with neither are left out).
    mutating func take() -> [(loop: Int, ops: [FanoutOp], results: [FanoutOp])] {
        var taken: [(loop: Int, ops: [FanoutOp], results: [FanoutOp])] = []
        guard self.waiting > 0 else { return taken }
        for index in self.opsByLoop.indices where !self.opsByLoop[index].isEmpty || !self.resultsByLoop[index].isEmpty {
            // Moved out, not copied: a copy of a list (or one list appended to the other) would
            // retain and release every operation.
            var ops: [FanoutOp] = []
            var results: [FanoutOp] = []
            swap(&ops, &self.opsByLoop[index])
            swap(&results, &self.resultsByLoop[index])
            taken.append((index, ops, results))
        }
        self.waiting = 0
        return taken
    }
}
