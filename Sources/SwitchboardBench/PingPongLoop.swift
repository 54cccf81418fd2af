/// One connection's closed loop in the pingpong scenario: at most one
/// publication of its own in flight; the next is sent only when that one
/// came back (or timed out). Plain state, no I/O: the handler feeds it
/// sends, echoes and clock ticks and does what it answers.
///
/// Sequence numbers start at 1 and grow by one per send, so every echo can
/// be matched to its send: the outstanding one matches; one at or below the
/// last matched is a duplicate; one between the last matched and the
/// outstanding one is late (its round trip had already timed out); one above
/// the outstanding one was never sent (a corrupted or foreign echo).
struct PingPongLoop: Sendable {
    /// What an echo turned out to be.
    enum Echo: Sendable, Hashable {
        /// The outstanding publication came back after `nanoseconds`.
        case matched(nanoseconds: Int64)
        case duplicate
        case late
        case unexpected
    }

    /// The outstanding round trip: its seq and when it was sent (monotonic ns).
    private(set) var outstanding: (seq: Int64, sentAt: Int64)?
    private(set) var lastSent: Int64 = 0
    private(set) var lastMatched: Int64 = 0

    init() {}

    /// Records a send at `now` and returns its seq.
    mutating func send(now: Int64) -> Int64 {
        self.lastSent += 1
        self.outstanding = (self.lastSent, now)
        return self.lastSent
    }

    /// Classifies an echo of `seq` received at `now`.
    mutating func echo(seq: Int64, now: Int64) -> Echo {
        if let outstanding = self.outstanding, seq == outstanding.seq {
            self.outstanding = nil
            self.lastMatched = seq
            return .matched(nanoseconds: max(0, now &- outstanding.sentAt))
        }
        if seq <= self.lastMatched { return .duplicate }
        if seq < (self.outstanding?.seq ?? self.lastSent + 1) { return .late }
        return .unexpected
    }

    /// Whether the outstanding round trip is older than `limit` at `now`;
    /// if so it is given up (its echo will count as late) and true returned.
    mutating func expire(now: Int64, limit: Int64) -> Bool {
        guard let outstanding = self.outstanding, now &- outstanding.sentAt > limit else { return false }
        self.outstanding = nil
        return true
    }

    var isWaiting: Bool { self.outstanding != nil }
}
