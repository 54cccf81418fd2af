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
    /// Channels still to refresh in this round.
    private var refreshQueue: [String] = []
    private var refreshPerTick = 1

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

    /// The channels to refresh this second; `channels` lists them all when a round starts.
    mutating func nextRefresh(channels: () -> [String]) -> [String] {
        if self.refreshQueue.isEmpty {
            self.refreshQueue = channels()
            let rounds = max(1, Int(self.ttl / 3))
            self.refreshPerTick = max(1, (self.refreshQueue.count + rounds - 1) / rounds)
        }
        let count = min(self.refreshPerTick, self.refreshQueue.count)
        let slice = Array(self.refreshQueue.suffix(count))
        self.refreshQueue.removeLast(count)
        return slice
    }

    /// `clients` in calls of at most `batchSize`.
    static func batches(_ clients: [ClientInfo]) -> [[ClientInfo]] {
        stride(from: 0, to: clients.count, by: Self.batchSize).map { Array(clients[$0..<min(clients.count, $0 + Self.batchSize)]) }
    }
}
