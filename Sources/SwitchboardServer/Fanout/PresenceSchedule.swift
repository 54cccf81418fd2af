import NIOCore
import SwitchboardCore

/// When the hub writes presence to the broker: the joins and leaves of a
/// channel gathered over `writeDelay` go as one call each (a connect storm of
/// thousands of clients a second is a few dozen broker calls, not one per
/// client), and every channel's entries are refreshed a slice per second so
/// that each is refreshed about every third of its TTL, without a burst of
/// broker calls. A plain value owned by a hub shard, which writes a channel's
/// gathered changes before it reads that channel's presence, so a client sees
/// its own join at once.
struct PresenceSchedule {
    /// Most entries in one broker call.
    static let batchSize = 500
    /// How long joins and leaves are gathered before they are written: short
    /// beside any presence TTL, long enough to turn a storm into batches.
    static let writeDelay: TimeAmount = .milliseconds(10)

    /// A broker call that writes gathered changes of one channel.
    enum Write: Equatable {
        case add(channel: String, clients: [ClientInfo])
        case remove(channel: String, clients: [String])
    }

    /// The changes of one channel not yet written: a client is in at most one of the two.
    private struct PendingChanges {
        var additions: [String: ClientInfo] = [:]
        var removals: Set<String> = []

        mutating func join(_ client: ClientInfo) {
            self.removals.remove(client.client)
            self.additions[client.client] = client
        }

        mutating func leave(_ client: String) {
            self.additions[client] = nil
            self.removals.insert(client)
        }
    }

    private let ttl: Double
    /// Changes by channel since the last write.
    private var pending: [String: PendingChanges] = [:]
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

    /// Whether any change waits to be written.
    var hasPendingWrites: Bool { !self.pending.isEmpty }

    /// A client joined `channel`: its entry is to be written (a leave of the same client not yet
    /// written is dropped: the entry it would remove is written again).
    mutating func add(_ client: ClientInfo, channel: String) {
        self.pending[channel, default: PendingChanges()].join(client)
    }

    /// A client left `channel`: its entry is to be removed, and a join not yet written is dropped.
    /// The removal is written even then, as an entry may have been written before (a refresh).
    mutating func remove(client: String, channel: String) {
        self.pending[channel, default: PendingChanges()].leave(client)
    }

    /// The broker calls for every change since the last write, at most `batchSize` clients each,
    /// removals first, clients in id order (any order is correct: a client is in one list only).
    mutating func takeWrites() -> [Write] {
        let pending = self.pending
        self.pending = [:]
        return pending.sorted { $0.key < $1.key }.flatMap { Self.writes(channel: $0.key, $0.value) }
    }

    /// The broker calls for the changes of `channel` only (before reading its presence).
    mutating func takeWrites(channel: String) -> [Write] {
        guard let changes = self.pending.removeValue(forKey: channel) else { return [] }
        return Self.writes(channel: channel, changes)
    }

    private static func writes(channel: String, _ changes: PendingChanges) -> [Write] {
        let removals = changes.removals.sorted()
        let additions = changes.additions.values.sorted { $0.client < $1.client }
        return stride(from: 0, to: removals.count, by: Self.batchSize).map {
            .remove(channel: channel, clients: Array(removals[$0..<min(removals.count, $0 + Self.batchSize)]))
        } + Self.batches(additions).map { .add(channel: channel, clients: $0) }
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
