/// The ordering rule of one channel on one node: given each publication the
/// broker delivers (its offset and epoch), decide whether it goes to the
/// subscribers now, was seen already, must wait for a refill of the missed
/// ones from history, or means history was lost under the subscribers.
///
/// Pure state: the hub feeds it broker events and refill results and does
/// what the decisions say. Offsets come from the broker (at most `Int64.max`),
/// so `offset + 1` cannot overflow.
public struct ChannelSequencer: Hashable, Sendable {
    /// What to do with one publication.
    public enum Decision: Hashable, Sendable {
        /// The next one in order: deliver it.
        case deliver
        /// Delivered already (a broker repeat, or read from history first): drop it.
        case ignore
        /// A refill is running: keep it and feed it again after the refill.
        case hold
        /// Publications are missing before it: keep it, read history after `from`, feed the
        /// missed ones (then the held ones) again.
        case refill(from: StreamPosition)
        /// The epoch changed: history was lost. Subscribers must be told (2500); the
        /// publication is the new baseline and is not delivered.
        case resync
        /// The last delivered offset came again as another publication (another `time`): the broker
        /// lost its newest publications and reuses their offsets in the same epoch. The epoch must
        /// be renewed and subscribers told (2500); the next publication becomes the baseline.
        case reused
    }

    /// The last publication delivered here, in order; gaps are measured from it. Nil until the
    /// first position is known (a channel without history never has one).
    public private(set) var lastLive: StreamPosition?
    /// Missed publications are being read from history.
    public private(set) var isRefilling = false
    /// The publishing time of the publication at `lastLive` (nanoseconds; 0 when unknown, as for
    /// one read from history): a repeat of it has the same time, a reuse of its offset another.
    public private(set) var lastLiveTime: UInt64 = 0

    public init(lastLive: StreamPosition? = nil) {
        self.lastLive = lastLive
    }

    /// A publication with history (offset > 0) arrived from the broker.
    ///
    /// - Parameter time: its publishing time (nanoseconds, 0 when unknown).
    public mutating func receive(offset: UInt64, epoch: String, time: UInt64 = 0) -> Decision {
        if self.isRefilling { return .hold }
        guard let last = self.lastLive else {
            self.deliver(offset, epoch, time)
            return .deliver
        }
        if last.epoch != epoch {
            self.deliver(offset, epoch, time)
            return .resync
        }
        if offset == last.offset, time != 0, self.lastLiveTime != 0, time != self.lastLiveTime {
            self.lastLive = nil
            self.lastLiveTime = 0
            return .reused
        }
        if offset <= last.offset { return .ignore }
        if offset > last.offset + 1 {
            self.isRefilling = true
            return .refill(from: last)
        }
        self.deliver(offset, epoch, time)
        return .deliver
    }

    private mutating func deliver(_ offset: UInt64, _ epoch: String, _ time: UInt64) {
        self.lastLive = StreamPosition(offset: offset, epoch: epoch)
        self.lastLiveTime = time
    }

    /// Sets the baseline if there is none yet (the first subscriber's position from history).
    public mutating func adoptBaseline(_ position: StreamPosition) {
        if self.lastLive == nil {
            self.lastLive = position
            self.lastLiveTime = 0
        }
    }

    /// A refill of everything after `baseline` starts outside `receive` (after a broker
    /// interruption, or a position check that found the channel behind).
    public mutating func beginRefill() {
        self.isRefilling = true
    }

    /// The refill's read came back: publications are fed again from `baseline` on.
    /// With `recovered` false the missed ones are gone: the caller tells subscribers (2500)
    /// and the next publication becomes the baseline.
    public mutating func finishRefill(baseline: StreamPosition, recovered: Bool) {
        self.isRefilling = false
        if !recovered || self.lastLive != baseline { self.lastLiveTime = 0 }
        self.lastLive = recovered ? baseline : nil
    }

    /// Forgets everything (the channel was not followed for a while).
    public mutating func reset() {
        self.lastLive = nil
        self.lastLiveTime = 0
        self.isRefilling = false
    }
}
