public import NIOCore
public import SwitchboardCore
import Foundation

/// A broker inside one process: the single-node default.
///
/// Sharded like the hub: one shard per event loop, each channel's history,
/// subscription and presence owned by the shard its name hashes to
/// (`ChannelShard`). A call about a channel runs on its shard's loop (a call
/// made there completes at once, with no hop); publication, history append and
/// delivery happen in one step there, so delivery order is offset order, and a
/// channel's events are delivered on its shard's loop. The registry and
/// control messages live on the first loop (`eventLoop`).
public final class MemoryBroker: Broker, @unchecked Sendable {
    // @unchecked: the registry and control handler are touched only on `eventLoop`, each shard's state only on its shard's loop; the rest is immutable.
    public let eventLoop: any EventLoop
    private let clock: @Sendable () -> Double
    private let shards: [Shard]

    // Touched only on `eventLoop`.
    private var registry: [String: (node: NodeInfo, expiresAt: Double)] = [:]
    private var controlHandler: (@Sendable (BrokerEvent) -> Void)?
    /// Connections counted per user (`acquireUserConnection`): user → connection → its node; only
    /// users with a connection counted are in it.
    private var userConnections: [String: [String: String]] = [:]

    /// Seeds the epochs of channels without stored meta (`StreamEpoch`); new per broker, as its data is.
    private let epochSeed = UInt64.random(in: 0...UInt64.max)

    /// How long a channel's epoch and top offset outlive its last publication.
    public let metaTTL: Double
    /// Caps on tables keyed by client input.
    public let limits: BrokerLimits
    public let deliveryBacklog: DeliveryBacklog?

    /// One loop's share of the channels. Everything in it is touched only on `eventLoop`.
    private final class Shard: @unchecked Sendable {
        // @unchecked: every `var` is touched only on `eventLoop` (the broker hops there for it).
        let eventLoop: any EventLoop
        var handler: (@Sendable (BrokerEvent) -> Void)?
        var channels: [String: ChannelHistory] = [:]
        var subscribed: Set<String> = []
        var presenceByChannel: [String: [String: (info: ClientInfo, expiresAt: Double)]] = [:]
        /// For a channel whose presence is full: no entry of it expires before this time.
        var presenceSweepAfter: [String: Double] = [:]
        var sweepTask: RepeatedTask?
        /// Times channels were forgotten to stay within the cap (part of unborn epochs).
        var forgettingPasses: UInt64 = 0
        /// Per subscribed channel, the generation its unborn epoch takes (bounded by `subscribed`).
        var subscribedGenerations: [String: UInt64] = [:]
        /// Bytes of publication data in this shard's histories (`BrokerLimits.maximumHistoryBytes`).
        var historyBytes = 0

        init(eventLoop: any EventLoop) {
            self.eventLoop = eventLoop
        }
    }

    /// A broker whose state lives on one event loop.
    /// - Parameters:
    ///   - eventLoop: the loop that owns the broker's state and delivers events.
    ///   - metaTTL: seconds a channel's epoch and offset are kept after its last publication.
    ///   - limits: caps on idempotency keys and presence entries per channel.
    ///   - clock: seconds since 1970; injectable for tests.
    public convenience init(
        eventLoop: any EventLoop,
        metaTTL: Double = 86_400,
        limits: BrokerLimits = BrokerLimits(),
        clock: @escaping @Sendable () -> Double = MemoryBroker.systemClock
    ) {
        self.init(eventLoops: [eventLoop], metaTTL: metaTTL, limits: limits, clock: clock)
    }

    /// A broker sharded over `eventLoops` (the node's loops, in the order the hub's shards use),
    /// so that a channel's broker shard and hub shard are on the same loop.
    /// - Parameter deliveryBacklog: one for the node to count its queued deliveries in (tests of that
    ///   counting): the memory broker reads from no network, so it holds nothing back itself.
    public init(
        eventLoops: [any EventLoop],
        metaTTL: Double = 86_400,
        limits: BrokerLimits = BrokerLimits(),
        clock: @escaping @Sendable () -> Double = MemoryBroker.systemClock,
        deliveryBacklog: DeliveryBacklog? = nil
    ) {
        self.deliveryBacklog = deliveryBacklog
        precondition(!eventLoops.isEmpty, "a broker needs an event loop")
        self.eventLoop = eventLoops[0]
        self.shards = eventLoops.map { Shard(eventLoop: $0) }
        self.metaTTL = metaTTL.isFinite ? min(max(metaTTL, 1), 10 * 365 * 86_400) : 86_400
        self.limits = limits
        self.clock = clock
    }

    /// Seconds since 1970 from the system clock.
    public static let systemClock: @Sendable () -> Double = { Date().timeIntervalSince1970 }

    public func eventLoop(forChannel channel: String) -> any EventLoop {
        self.shard(channel).eventLoop
    }

    private func shard(_ channel: String) -> Shard {
        self.shards[ChannelShard.index(of: channel, count: self.shards.count)]
    }

    private func onLoop<T: Sendable>(_ loop: any EventLoop, _ body: @escaping @Sendable () throws -> T) -> EventLoopFuture<T> {
        if loop.inEventLoop {
            return loop.makeCompletedFuture(Result(catching: body))
        }
        return loop.submit(body)
    }

    /// Runs `body` with the shard of `channel`, on its loop.
    private func onShard<T: Sendable>(_ channel: String, _ body: @escaping @Sendable (Shard) throws -> T) -> EventLoopFuture<T> {
        let shard = self.shard(channel)
        return self.onLoop(shard.eventLoop) { try body(shard) }
    }

    public func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void> {
        let started = self.shards.map { shard in
            self.onLoop(shard.eventLoop) {
                shard.handler = eventHandler
                if shard.sweepTask == nil {
                    shard.sweepTask = shard.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(10), delay: .seconds(10)) { _ in
                        self.sweep(shard)
                    }
                }
            }
        }
        return EventLoopFuture.andAllSucceed(started, on: self.eventLoop).flatMap {
            self.onLoop(self.eventLoop) { self.controlHandler = eventHandler }
        }
    }

    public func publish(_ request: PublishRequest) -> EventLoopFuture<PublishResult> {
        if let error = self.refusal(of: request) {
            return self.shard(request.channel).eventLoop.makeFailedFuture(error)
        }
        return self.onShard(request.channel) { self.publish(request, on: $0) }
    }

    /// On the channel's shard loop the publication is made right here, without a future.
    public func publishNow(_ request: PublishRequest) -> Result<PublishResult, any Error>? {
        let shard = self.shard(request.channel)
        guard shard.eventLoop.inEventLoop else { return nil }
        if let error = self.refusal(of: request) { return .failure(error) }
        return .success(self.publish(request, on: shard))
    }

    private func refusal(of request: PublishRequest) -> BrokerError? {
        if let key = request.idempotencyKey, key.utf8.count > self.limits.maximumIdempotencyKeyBytes {
            return BrokerError(.invalidRequest, "idempotency key longer than \(self.limits.maximumIdempotencyKeyBytes) bytes")
        }
        return nil
    }

    /// Orders, stores and delivers one publication. The channel's record is mutated in place in
    /// `channels` (`subscript(_:default:)` yields it): copying it out and back would copy its whole
    /// history on every publish.
    private func publish(_ request: PublishRequest, on shard: Shard) -> PublishResult {
        let now = self.clock()
        let name = request.channel
        let keepsHistory = request.historySize > 0 && request.historyTTL > 0
        if let key = request.idempotencyKey, let previous = shard.channels[name]?.idempotency.lookup(key, now: now) {
            return PublishResult(position: previous, duplicate: true)
        }
        var publication = Publication(offset: 0, data: request.data, info: request.info, time: request.time)
        var position = StreamPosition(offset: 0, epoch: "")
        if shard.channels.count >= self.channelRecordsPerShard && (keepsHistory || request.idempotencyKey != nil)
            && shard.channels[name] == nil
        {
            self.forgetOldestChannels(shard)
        }
        if keepsHistory {
            var storedBytesChange = 0
            position = shard.channels[name, default: ChannelHistory()].append(
                publication, expiresAt: now + request.historyTTL, maximumCount: request.historySize,
                now: now, metaTTL: self.metaTTL, newEpoch: self.unbornEpoch(name, now: now, shard: shard),
                storedBytesChange: &storedBytesChange)
            publication.offset = position.offset
            shard.historyBytes &+= storedBytesChange
            if shard.historyBytes > self.historyBytesPerShard { self.dropOldestHistories(shard) }
        }
        if let key = request.idempotencyKey {
            shard.channels[name, default: ChannelHistory()].idempotency.remember(
                key, position: position, expiresAt: now + request.idempotencyWindow, now: now,
                capacity: self.limits.maximumIdempotencyKeysPerChannel)
        }
        if let handler = shard.handler, shard.subscribed.contains(name) {
            handler(.publication(channel: name, publication, epoch: position.epoch))
        }
        return PublishResult(position: position)
    }

    /// A shard's share of `limits.maximumHistoryBytes`.
    private var historyBytesPerShard: Int { max(1, self.limits.maximumHistoryBytes / self.shards.count) }

    /// The shard's histories hold more than its share of the history budget: drops the histories of
    /// the channels published to longest ago (unwatched ones first) until they hold nine tenths of it,
    /// so the next pass is a tenth of the budget of new publications away. Each channel keeps its
    /// epoch and top offset: a recovery from before answers `recovered: false`, as after a trim.
    private func dropOldestHistories(_ shard: Shard) {
        let target = self.historyBytesPerShard - self.historyBytesPerShard / 10
        var unwatched: [(name: String, lastPublish: Double)] = []
        var watched: [(name: String, lastPublish: Double)] = []
        for (name, record) in shard.channels where record.entries.bytes > 0 {
            if shard.subscribed.contains(name) {
                watched.append((name, record.lastPublish))
            } else {
                unwatched.append((name, record.lastPublish))
            }
        }
        for var group in [unwatched, watched] {
            // Oldest first, a tenth of what is left of the group at a time, picked without sorting
            // the table (`ChannelEviction`, linear per pass); each pass drops a batch whole, not
            // strictly oldest first within it.
            while shard.historyBytes > target, !group.isEmpty {
                let oldest = ChannelEviction.oldest(max(1, group.count / 10), of: group)
                for name in oldest where shard.historyBytes > target {
                    shard.historyBytes &-= shard.channels[name]!.entries.bytes
                    shard.channels[name]!.entries.removeFirst(shard.channels[name]!.entries.count)
                }
                let taken = Set(oldest)
                group.removeAll { taken.contains($0.name) }
            }
        }
    }

    /// A shard's share of `limits.maximumChannelRecords`.
    private var channelRecordsPerShard: Int { max(1, self.limits.maximumChannelRecords / self.shards.count) }

    /// The shard's table is full: forgets the records published to longest ago, down to nine tenths of
    /// the cap (so the next pass is a tenth of the cap of new channels away, and each costs O(records)
    /// once per that many publications). Channels no local subscriber follows go first; a forgotten
    /// channel's next publication starts a new epoch, as after `metaTTL`, so a recovering client is told
    /// it missed publications rather than given wrong ones.
    private func forgetOldestChannels(_ shard: Shard) {
        let target = self.channelRecordsPerShard - self.channelRecordsPerShard / 10 - 1
        var excess = shard.channels.count - max(0, target)
        guard excess > 0 else { return }
        var unwatched: [(name: String, lastPublish: Double)] = []
        var watched: [(name: String, lastPublish: Double)] = []
        for (name, record) in shard.channels {
            if shard.subscribed.contains(name) {
                watched.append((name, record.lastPublish))
            } else {
                unwatched.append((name, record.lastPublish))
            }
        }
        // The channels forgotten now get new epochs in their next lives (`StreamEpoch`): the same
        // name's epoch would otherwise come back within the same `metaTTL` period.
        shard.forgettingPasses &+= 1
        for group in [unwatched, watched] where excess > 0 {
            for name in ChannelEviction.oldest(min(excess, group.count), of: group) {
                shard.historyBytes &-= shard.channels[name]?.entries.bytes ?? 0
                shard.channels[name] = nil
                if shard.subscribedGenerations[name] != nil { shard.subscribedGenerations[name] = shard.forgettingPasses }
                excess -= 1
            }
        }
    }

    /// The epoch of a channel that has no stored meta: the one its first publication will get.
    /// A subscribed channel keeps the generation of its subscription (or of its last forgetting), so a
    /// quiet one's epoch does not move when other channels are forgotten; the others take the shard's.
    private func unbornEpoch(_ channel: String, now: Double, shard: Shard) -> String {
        let generation = shard.subscribedGenerations[channel] ?? shard.forgettingPasses
        return StreamEpoch.unborn(seed: self.epochSeed, channel: channel, now: now, metaTTL: self.metaTTL, generation: generation)
    }

    public func publishPresenceEvent(_ event: PresenceEvent, channel: String) -> EventLoopFuture<Void> {
        self.onShard(channel) { shard in
            if shard.subscribed.contains(channel), let handler = shard.handler {
                handler(.presence(channel: channel, event))
            }
        }
    }

    public func subscribe(channel: String) -> EventLoopFuture<Void> {
        self.onShard(channel) { shard in
            if shard.subscribed.insert(channel).inserted {
                // Its unborn epoch stays what the subscriber saw, whatever other channels are forgotten.
                shard.subscribedGenerations[channel] = shard.forgettingPasses
            }
        }
    }

    public func unsubscribe(channel: String) -> EventLoopFuture<Void> {
        self.onShard(channel) { shard in
            shard.subscribed.remove(channel)
            shard.subscribedGenerations[channel] = nil
        }
    }

    /// Reads never create a record: an unknown (or forgotten) channel reports offset 0 and the
    /// epoch its first publication will get. An offset past the top (up to `UInt64.max`) reads nothing.
    public func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        self.onShard(query.channel) { shard in
            let now = self.clock()
            let name = query.channel
            // No local copy of the record: it would share (and so force a copy of) its storage below.
            guard let top = shard.channels[name]?.top, top > 0, shard.channels[name]?.isStale(now: now, metaTTL: self.metaTTL) == false
            else {
                return HistoryResult(publications: [], position: StreamPosition(offset: 0, epoch: self.unbornEpoch(name, now: now, shard: shard)))
            }
            let storedBefore = shard.channels[name]!.entries.bytes
            shard.channels[name]!.entries.dropExpired(now: now)
            shard.historyBytes &-= storedBefore &- shard.channels[name]!.entries.bytes
            let position = StreamPosition(offset: top, epoch: shard.channels[name]!.epoch)
            var publications = shard.channels[name]!.read(since: query.sinceOffset, limit: query.limit, reverse: query.reverse)
            let fitting = query.fittingCount(publications)
            guard fitting == publications.count else {
                publications.removeSubrange(fitting...)
                return HistoryResult(publications: publications, position: position, truncated: true)
            }
            return HistoryResult(publications: publications, position: position)
        }
    }

    /// At most `limits.maximumPresencePerChannel` entries per channel: past it, clients already
    /// present are refreshed and new ones are not listed.
    public func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        self.onShard(channel) { shard in
            guard !clients.isEmpty else { return }
            let now = self.clock()
            let expiry = now + ttl
            guard expiry > now else { return }
            let capacity = self.limits.maximumPresencePerChannel
            var entries = shard.presenceByChannel.removeValue(forKey: channel) ?? [:]
            for info in clients {
                if entries[info.client] == nil, entries.count >= capacity {
                    // A full channel is swept for expired entries only once its earliest expiry is
                    // past: a stream of new clients into a full channel must not cost a pass over
                    // all its entries each.
                    if now >= shard.presenceSweepAfter[channel] ?? 0 {
                        entries = entries.filter { $0.value.expiresAt > now }
                        shard.presenceSweepAfter[channel] =
                            entries.count >= capacity ? entries.values.lazy.map(\.expiresAt).min() : nil
                    }
                    if entries.count >= capacity { continue }
                }
                entries[info.client] = (info, expiry)
            }
            if !entries.isEmpty { shard.presenceByChannel[channel] = entries }
        }
    }

    public func removePresence(channel: String, clients: [String]) -> EventLoopFuture<Void> {
        self.onShard(channel) { shard in
            for client in clients { shard.presenceByChannel[channel]?[client] = nil }
            shard.presenceSweepAfter[channel] = nil  // no longer full
            if shard.presenceByChannel[channel]?.isEmpty == true { shard.presenceByChannel[channel] = nil }
        }
    }

    public func presence(channel: String) -> EventLoopFuture<[ClientInfo]> {
        self.onShard(channel) { shard in
            let now = self.clock()
            guard var entries = shard.presenceByChannel[channel] else { return [] }
            entries = entries.filter { $0.value.expiresAt > now }
            shard.presenceByChannel[channel] = entries.isEmpty ? nil : entries
            if entries.count < self.limits.maximumPresencePerChannel { shard.presenceSweepAfter[channel] = nil }
            return entries.values.map(\.info).sorted { $0.client < $1.client }
        }
    }

    public func announce(_ node: NodeInfo, ttl: Double) -> EventLoopFuture<Void> {
        self.onLoop(self.eventLoop) { self.registry[node.id] = (node, self.clock() + ttl) }
    }

    public func removeNode(id: String) -> EventLoopFuture<Void> {
        self.onLoop(self.eventLoop) { self.registry[id] = nil }
    }

    public func nodes() -> EventLoopFuture<[NodeInfo]> {
        self.onLoop(self.eventLoop) {
            let now = self.clock()
            self.registry = self.registry.filter { $0.value.expiresAt > now }
            return self.registry.values.map(\.node).sorted { $0.id < $1.id }
        }
    }

    public func acquireUserConnection(user: String, connection: String, node: String, limit: Int) -> EventLoopFuture<Bool> {
        guard user.utf8.count <= self.limits.maximumUserBytes else {
            return self.eventLoop.makeFailedFuture(BrokerError(.invalidRequest, "user longer than \(self.limits.maximumUserBytes) bytes"))
        }
        guard limit > 0 else { return self.eventLoop.makeSucceededFuture(true) }
        return self.onLoop(self.eventLoop) {
            let now = self.clock()
            // Connections of nodes gone from the registry no longer hold the user back.
            var held = (self.userConnections[user] ?? [:]).filter { entry in
                entry.value == node || (self.registry[entry.value].map { $0.expiresAt > now } ?? false)
            }
            guard held[connection] == nil else { return true }
            guard held.count < limit else {
                self.userConnections[user] = held.isEmpty ? nil : held
                return false
            }
            held[connection] = node
            self.userConnections[user] = held
            return true
        }
    }

    public func releaseUserConnection(user: String, connection: String) -> EventLoopFuture<Void> {
        self.onLoop(self.eventLoop) {
            guard self.userConnections[user]?.removeValue(forKey: connection) != nil else { return }
            if self.userConnections[user]!.isEmpty { self.userConnections[user] = nil }
        }
    }

    public func sendControl(_ message: ControlMessage, to node: String?) -> EventLoopFuture<Void> {
        self.onLoop(self.eventLoop) { self.controlHandler?(.control(message)) }
    }

    public func shutdown() -> EventLoopFuture<Void> {
        let stopped = self.shards.map { shard in
            self.onLoop(shard.eventLoop) {
                shard.sweepTask?.cancel()
                shard.sweepTask = nil
                shard.handler = nil
            }
        }
        return EventLoopFuture.andAllSucceed(stopped, on: self.eventLoop).flatMap {
            self.onLoop(self.eventLoop) { self.controlHandler = nil }
        }
    }

    /// What the broker holds, for tests and metrics: every count must fall back once what made it is gone.
    public struct Footprint: Sendable, Hashable {
        /// Channel records (history position or idempotency keys).
        public var channels: Int
        /// Publications stored, all channels.
        public var publications: Int
        /// Idempotency keys remembered, all channels.
        public var idempotencyKeys: Int
        /// Channels with presence entries.
        public var presenceChannels: Int
        /// Presence entries, all channels.
        public var presenceEntries: Int
        /// Channels this node is subscribed to.
        public var subscriptions: Int
        /// Users with connection slots counted (`acquireUserConnection`).
        public var users: Int
    }

    /// Counts what the broker holds now (the sum over its shards).
    public func footprint() -> EventLoopFuture<Footprint> {
        let parts = self.shards.map { shard in
            self.onLoop(shard.eventLoop) {
                Footprint(
                    channels: shard.channels.count,
                    publications: shard.channels.values.reduce(0) { $0 + $1.entries.count },
                    idempotencyKeys: shard.channels.values.reduce(0) { $0 + $1.idempotency.count },
                    presenceChannels: shard.presenceByChannel.count,
                    presenceEntries: shard.presenceByChannel.values.reduce(0) { $0 + $1.count },
                    subscriptions: shard.subscribed.count,
                    users: shard.eventLoop === self.eventLoop ? self.userConnections.count : 0
                )
            }
        }
        return EventLoopFuture.whenAllSucceed(parts, on: self.eventLoop).map { parts in
            parts.reduce(into: Footprint(channels: 0, publications: 0, idempotencyKeys: 0, presenceChannels: 0, presenceEntries: 0, subscriptions: 0, users: 0)) {
                $0.channels += $1.channels
                $0.publications += $1.publications
                $0.idempotencyKeys += $1.idempotencyKeys
                $0.presenceChannels += $1.presenceChannels
                $0.presenceEntries += $1.presenceEntries
                $0.subscriptions += $1.subscriptions
                $0.users += $1.users
            }
        }
    }

    /// Where a channel's stored publications live: tests check that publishes neither copy nor
    /// reallocate them (the storage of a full history keeps its address and capacity).
    struct HistoryStorage: Sendable, Hashable {
        var address: UInt
        var capacity: Int
    }

    func historyStorage(channel: String) -> EventLoopFuture<HistoryStorage?> {
        self.onShard(channel) { shard in
            guard shard.channels[channel] != nil else { return nil }
            let address = shard.channels[channel]!.entries.storageIdentity.map { UInt(bitPattern: $0) } ?? 0
            return HistoryStorage(address: address, capacity: shard.channels[channel]!.entries.capacity)
        }
    }

    /// Runs the periodic sweep now (tests drive it with an injected clock).
    public func sweepNow() -> EventLoopFuture<Void> {
        let swept = self.shards.map { shard in self.onLoop(shard.eventLoop) { self.sweep(shard) } }
        return EventLoopFuture.andAllSucceed(swept, on: self.eventLoop)
    }

    /// Drops expired history, idempotency keys, presence and records left holding nothing, so that a
    /// channel with no publications in its history window, no subscribers and no presence costs nothing.
    private func sweep(_ shard: Shard) {
        let now = self.clock()
        for name in Array(shard.channels.keys) {
            let storedBefore = shard.channels[name]!.entries.bytes
            defer { shard.historyBytes &-= storedBefore &- (shard.channels[name]?.entries.bytes ?? 0) }
            if shard.channels[name]!.isStale(now: now, metaTTL: self.metaTTL) {
                // Position forgotten; idempotency keys still in their window stay.
                shard.channels[name]!.top = 0
                shard.channels[name]!.entries.removeFirst(shard.channels[name]!.entries.count)
            }
            shard.channels[name]!.entries.dropExpired(now: now)
            shard.channels[name]!.idempotency.dropExpired(now: now, releasingStorage: true)
            if shard.channels[name]!.isEmpty(now: now, metaTTL: self.metaTTL) { shard.channels[name] = nil }
        }
        for (channel, entries) in shard.presenceByChannel {
            let live = entries.filter { $0.value.expiresAt > now }
            shard.presenceByChannel[channel] = live.isEmpty ? nil : live
            if live.count < self.limits.maximumPresencePerChannel { shard.presenceSweepAfter[channel] = nil }
        }
        // (A channel whose presence is gone keeps no sweep time either.)
        shard.presenceSweepAfter = shard.presenceSweepAfter.filter { shard.presenceByChannel[$0.key] != nil }
        if shard.eventLoop === self.eventLoop {
            self.registry = self.registry.filter { $0.value.expiresAt > now }
        }
    }
}
