/// Decides what a subscriber gets when it joins a channel: the all-or-nothing
/// recovery rule of the protocol, merged with live publications that arrived
/// while the history was being read.
///
/// The hub buffers live publications from before the history read; the plan
/// says which history entries go into the subscribe reply and which buffered
/// entries follow it as pushes, so there is no gap and no duplicate at the seam.
public struct RecoveryPlan: Hashable, Sendable {
    /// The position the reply reports.
    public var position: StreamPosition
    /// Whether `since` was honoured; nil when no `since` was given.
    public var recovered: Bool?
    /// Offsets of history publications to include in the reply, oldest first.
    public var replayed: [UInt64]
    /// Offsets of buffered live publications that follow the reply, oldest first.
    public var following: [UInt64]

    /// Plans a subscribe.
    ///
    /// - Parameters:
    ///   - since: the client's last position, if it asked to recover.
    ///   - top: the channel's position as returned with the history read.
    ///   - historyOffsets: offsets returned by the history read (all after `since`), oldest first.
    ///   - bufferedOffsets: offsets of live publications buffered since the subscription began, in arrival order.
    public init(since: StreamPosition?, top: StreamPosition, historyOffsets: [UInt64], bufferedOffsets: [UInt64]) {
        self.position = top
        self.following = Self.after(top.offset, bufferedOffsets)
        guard let since else {
            self.recovered = nil
            self.replayed = []
            return
        }
        let missed = top.offset >= since.offset ? top.offset - since.offset : 0
        let contiguous =
            since.epoch == top.epoch
            && since.offset <= top.offset
            && UInt64(historyOffsets.count) == missed
            && historyOffsets.enumerated().allSatisfy { $0.element == since.offset + 1 + UInt64($0.offset) }
        if contiguous {
            self.recovered = true
            self.replayed = historyOffsets
        } else {
            self.recovered = false
            self.replayed = []
        }
    }

    private static func after(_ offset: UInt64, _ buffered: [UInt64]) -> [UInt64] {
        var result: [UInt64] = []
        var last = offset
        for o in buffered where o > last {
            result.append(o)
            last = o
        }
        return result
    }
}
