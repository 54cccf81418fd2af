import NIOCore

/// The liveness check of one shard subscriber connection (one master): a probe message published to a
/// shard channel of that master every interval must come back through the connection before the next
/// one is due; when it does not, the connection is taken for silent (open, answering nothing: a
/// middlebox lost it, the server dropped it without a word) and rebuilt. A plain value whose events
/// return what to do, tested without a server.
struct RedisShardProbe: Equatable {
    enum Action: Equatable {
        /// `SPUBLISH channel sequence`.
        case publish(sequence: UInt64)
        /// The last probe never came back: rebuild the connection.
        case reconnect
    }

    /// A shard channel whose slot the master serves.
    let channel: String
    private(set) var sent: UInt64 = 0
    private(set) var received: UInt64 = 0
    private var sentAt: NIODeadline?

    init(channel: String) {
        self.channel = channel
    }

    /// The interval is up: publish the next probe, or rebuild the connection when the last one,
    /// sent at least `interval` ago, has not come back. After a rebuild the count starts over.
    mutating func tick(now: NIODeadline, interval: TimeAmount) -> Action {
        if let sentAt = self.sentAt, self.received < self.sent, now - sentAt >= interval {
            self.sentAt = nil
            self.received = self.sent
            return .reconnect
        }
        self.sent &+= 1
        self.sentAt = now
        return .publish(sequence: self.sent)
    }

    /// Reads on the connection were held back on purpose (the owner is behind) at `time`: a probe
    /// sent before then may be waiting behind the held messages, so its time counts from `time`.
    mutating func readsHeld(at time: NIODeadline) {
        if let sentAt = self.sentAt, time > sentAt { self.sentAt = time }
    }

    /// A probe came back (its payload: the sequence number as text; anything else is ignored).
    mutating func delivered(_ payload: ByteBuffer) {
        guard let sequence = UInt64(String(buffer: payload)) else { return }
        self.received = max(self.received, sequence)
    }

    /// The publish failed (the master unreachable): the connection's own failure handling covers
    /// that; this probe is not counted against it.
    mutating func publishFailed(sequence: UInt64) {
        guard sequence == self.sent else { return }
        self.sentAt = nil
        self.received = self.sent
    }

    /// A channel named `prefix:{tag}` whose slot `serves` accepts, trying at most `attempts` tags (a
    /// master serving one slot in 16,384 is found in about 16,384 tries: CRC16 spreads evenly).
    static func channel(prefix: String, attempts: Int = 200_000, where serves: (UInt16) -> Bool) -> String? {
        for index in 0..<attempts {
            let name = "\(prefix):{\(index)}"
            if serves(RedisHashSlot.slot(of: name)) { return name }
        }
        return nil
    }
}
