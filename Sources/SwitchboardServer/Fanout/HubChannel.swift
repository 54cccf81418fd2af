import NIOCore
import SwitchboardCore

/// The hub's view of one channel.
///
/// A class, not a struct: a channel's member table is mutated on every
/// subscribe and unsubscribe, and a struct taken out of the dictionary would
/// copy the whole table each time (O(n²) to fill a channel).
final class HubChannel {
    var loopCounts: [Int]
    var members: [SubscriptionID: Member] = [:]
    var joins: [SubscriptionID: PendingJoin] = [:]
    /// Live publications kept while joins are in progress: from the earliest `bufferStart` of the
    /// joins under way (`endJoin` drops what no join needs any more).
    var buffer: [BufferedPublication] = []
    /// Joins ended since `buffer` was last trimmed.
    private var endedSinceTrim = 0
    /// The node's subscription to the channel at the broker.
    var link = BrokerSubscription()
    /// The newest position the hub knows; lets a subscribe without recovery skip the broker.
    var fastPosition: StreamPosition?
    /// The ordering rule: what is delivered, dropped, held or refilled.
    var sequencer = ChannelSequencer()
    var keepsHistory = false
    /// While missed publications are read from history, live ones wait here.
    var refillBuffer: [(Publication, String)] = []
    /// What the last position check saw when the broker was ahead.
    var suspectTop: UInt64?
    var suspectEpoch: String?
    /// The last delivered position when the last position check found the broker's top below it.
    var suspectLost: StreamPosition?

    init(loopCount: Int) {
        self.loopCounts = Array(repeating: 0, count: loopCount)
    }

    /// The history reads of joins under way may answer a state that no longer holds: each is read again.
    func markJoinReadsStale() {
        for id in self.joins.keys { self.joins[id]?.read = .stale }
    }

    /// A join is over (answered, failed or left): it no longer needs the buffer. What no join under
    /// way needs is dropped: once they are all over, the whole buffer; otherwise the part before the
    /// earliest start, looked for after a quarter of the joins have ended (so that overlapping joins,
    /// as a wave of polls on a busy channel is, cannot keep it growing, and ending each of many joins
    /// does not cost a pass over all of them).
    func endJoin(_ id: SubscriptionID) {
        guard self.joins.removeValue(forKey: id) != nil else { return }
        guard !self.joins.isEmpty else {
            self.buffer.removeAll(keepingCapacity: false)
            self.endedSinceTrim = 0
            return
        }
        self.endedSinceTrim += 1
        guard self.endedSinceTrim >= max(4, self.joins.count / 4) else { return }
        self.endedSinceTrim = 0
        let earliest = self.joins.values.lazy.map(\.bufferStart).min() ?? self.buffer.count
        guard earliest > 0 else { return }
        self.buffer.removeFirst(earliest)
        for id in self.joins.keys { self.joins[id]!.bufferStart -= earliest }
    }

    /// Forgets positions and refill state (the channel was not followed for a while).
    func resetSequencing() {
        self.fastPosition = nil
        self.sequencer.reset()
        self.keepsHistory = false
        self.refillBuffer = []
        self.suspectTop = nil
        self.suspectEpoch = nil
        self.suspectLost = nil
    }
}

/// A subscription in a channel's member table: one per subscribed connection, so kept small
/// (the two flags its leave needs, not the namespace's whole options).
struct Member {
    var loopIndex: Int
    var client: ClientInfo
    /// The channel's namespace keeps presence: the member's entry is written and refreshed.
    var presence: Bool
    /// The namespace pushes joins and leaves.
    var joinLeave: Bool
}

struct PendingJoin {
    var request: JoinRequest
    /// Where the live publications that follow its history read start in the channel's buffer.
    var bufferStart: Int
    /// History reads sent for this join so far.
    var reads = 0
    /// What the read under way may answer: `.current`, or `.stale` when the channel's history changed
    /// under it in a way its answer cannot show (an epoch change, publications the broker lost, an
    /// interrupted broker link); a stale answer is read again.
    var read = Read.current
    /// The subscriber left while a read was out: when the read returns the join ends, never made a
    /// member, answered with a `.reject` that tells the session the read is over (`HubShard.finishJoin`).
    var left = false

    enum Read {
        case current
        case stale
    }
}

struct BufferedPublication {
    var offset: UInt64
    /// The epoch the publication came with: one that differs from the join's history read means the
    /// read is already out of date.
    var epoch: String
    var message: OutboundMessage
}
