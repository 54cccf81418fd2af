import SwitchboardCore

/// When the hub writes presence to the broker: entries of clients that joined
/// within one tick go as one call per channel, and every channel's entries are
/// refreshed a slice per second so that each is refreshed about every third of
/// its TTL, without a burst of broker calls. A plain value owned by the hub.
struct PresenceSchedule {
    /// Most entries in one broker call.
    static let batchSize = 500

    private let ttl: Double
    /// Entries to add, by channel, since the last flush.
    private var pending: [String: [ClientInfo]] = [:]
    /// Parts of channels still to refresh in this round.
    private var refreshQueue: [RefreshPart] = []
    private var refreshPerTick = 1

    /// A share of one channel's entries to refresh in one tick: the members whose id falls in
    /// `part` of `parts` (a channel gets one part per `batchSize` entries at the start of a round).
    struct RefreshPart: Equatable {
        var channel: String
        var part: Int
        var parts: Int

        /// Whether the member with this subscription id belongs to this part. Ids spread
        /// evenly (a multiplicative hash: their low byte is the event loop's index).
        func contains(_ id: SubscriptionID) -> Bool {
            self.parts == 1 || Int(((id &* 0x9E37_79B9_7F4A_7C15) >> 32) % UInt64(self.parts)) == self.part
        }
    }

    init(ttl: Double) {
        self.ttl = ttl
    }

    /// A client joined `channel`; returns true when this is the first entry since the last flush
    /// (schedule one).
    mutating func add(_ client: ClientInfo, channel: String) -> Bool {
        let first = self.pending.isEmpty
        self.pending[channel, default: []].append(client)
        return first
    }

    /// A client left before its entry was written.
    mutating func cancel(client: String, channel: String) {
        guard var entries = self.pending[channel] else { return }
        entries.removeAll { $0.client == client }
        self.pending[channel] = entries.isEmpty ? nil : entries
    }

    /// The broker calls for what was added since the last flush, at most `batchSize` entries each.
    mutating func flush() -> [(channel: String, clients: [ClientInfo])] {
        let pending = self.pending
        self.pending = [:]
        return pending.flatMap { channel, clients in Self.batches(clients).map { (channel, $0) } }
    }

    /// The parts to refresh this second; `channels` lists every channel with its entry count when
    /// a round starts. A round lasts a third of the TTL, so each entry is refreshed that often.
    mutating func nextRefresh<Channels: Sequence<(String, Int)>>(channels: () -> Channels) -> [RefreshPart] {
        if self.refreshQueue.isEmpty {
            for (channel, entries) in channels() {
                let parts = max(1, (entries + Self.batchSize - 1) / Self.batchSize)
                for part in 0..<parts {
                    self.refreshQueue.append(RefreshPart(channel: channel, part: part, parts: parts))
                }
            }
            let rounds = Self.rounds(ttl: self.ttl)
            self.refreshPerTick = max(1, (self.refreshQueue.count + rounds - 1) / rounds)
        }
        let count = min(self.refreshPerTick, self.refreshQueue.count)
        let slice = Array(self.refreshQueue.suffix(count))
        self.refreshQueue.removeLast(count)
        return slice
    }

    /// Ticks (seconds) per refresh round: a third of the TTL, at least 1, at most a day (any
    /// configured TTL, however large, is a number of ticks that cannot trap).
    static func rounds(ttl: Double) -> Int {
        let third = ttl / 3
        guard third >= 1 else { return 1 }
        return third < 86_400 ? Int(third) : 86_400
    }

    /// `clients` in calls of at most `batchSize`.
    static func batches(_ clients: [ClientInfo]) -> [[ClientInfo]] {
        stride(from: 0, to: clients.count, by: Self.batchSize).map { Array(clients[$0..<min(clients.count, $0 + Self.batchSize)]) }
    }
}
