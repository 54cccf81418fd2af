/// The hub's outgoing work per event loop within one tick: each loop gets its
/// operations as one batch, and publications of one channel that follow each
/// other are merged into one `PublicationBatch` (one message per subscriber).
/// A plain value owned by the hub.
struct FanoutBatcher {
    private var opsByLoop: [[FanoutOp]]

    init(loopCount: Int) {
        self.opsByLoop = Array(repeating: [], count: loopCount)
    }

    /// Whether nothing waits.
    var isEmpty: Bool { self.opsByLoop.allSatisfy(\.isEmpty) }

    /// Adds an operation for `loop`; returns true when it is the first of this tick (schedule a flush).
    mutating func enqueue(_ op: FanoutOp, loop: Int) -> Bool {
        let wasEmpty = self.isEmpty
        if case .publication(let name, let offset, let time, let message) = op, let last = self.opsByLoop[loop].last {
            switch last {
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

    /// Takes every loop's operations (loops with none are left out).
    mutating func take() -> [(loop: Int, ops: [FanoutOp])] {
        var taken: [(loop: Int, ops: [FanoutOp])] = []
        for index in self.opsByLoop.indices where !self.opsByLoop[index].isEmpty {
            taken.append((index, self.opsByLoop[index]))
            self.opsByLoop[index] = []
        }
        return taken
    }
}
