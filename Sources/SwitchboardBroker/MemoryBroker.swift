public import NIOCore
public import SwitchboardCore
import Foundation

/// A broker inside one process: the single-node default.
///
/// All state is confined to `eventLoop`; calls from other threads hop there
/// once. Publication, history append and delivery happen in one step on that
/// loop, so delivery order is offset order.
public final class MemoryBroker: Broker, @unchecked Sendable {
    // @unchecked: every `var` is read and written only inside `onLoop` (on `eventLoop`); the rest is immutable.
    public let eventLoop: any EventLoop
    private let clock: @Sendable () -> Double

    // Everything below is touched only on `eventLoop`.
    private var handler: (@Sendable (BrokerEvent) -> Void)?
    private var channels: [String: ChannelHistory] = [:]
    private var subscribed: Set<String> = []
    private var presenceByChannel: [String: [String: (info: ClientInfo, expiresAt: Double)]] = [:]
    private var registry: [String: (node: NodeInfo, expiresAt: Double)] = [:]
    private var sweepTask: RepeatedTask?
    /// Seeds the epochs of channels without stored meta (`StreamEpoch`); new per broker, as its data is.
    private let epochSeed = UInt64.random(in: 0...UInt64.max)

    /// How long a channel's epoch and top offset outlive its last publication.
    public let metaTTL: Double
    /// Caps on tables keyed by client input.
    public let limits: BrokerLimits

    /// - Parameters:
    ///   - eventLoop: the loop that owns the broker's state and delivers events.
    ///   - metaTTL: seconds a channel's epoch and offset are kept after its last publication.
    ///   - limits: caps on idempotency keys and presence entries per channel.
    ///   - clock: seconds since 1970; injectable for tests.
    public init(
        eventLoop: any EventLoop,
        metaTTL: Double = 86_400,
        limits: BrokerLimits = BrokerLimits(),
        clock: @escaping @Sendable () -> Double = MemoryBroker.systemClock
    ) {
        self.eventLoop = eventLoop
        self.metaTTL = metaTTL.isFinite ? min(max(metaTTL, 1), 10 * 365 * 86_400) : 86_400
        self.limits = limits
        self.clock = clock
    }

    /// Seconds since 1970 from the system clock.
    public static let systemClock: @Sendable () -> Double = { Date().timeIntervalSince1970 }

    private func onLoop<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> EventLoopFuture<T> {
        if self.eventLoop.inEventLoop {
            return self.eventLoop.makeCompletedFuture(Result(catching: body))
        }
        return self.eventLoop.submit(body)
    }

    public func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void> {
        self.onLoop {
            self.handler = eventHandler
            if self.sweepTask == nil {
                self.sweepTask = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(10), delay: .seconds(10)) { _ in
                    self.sweep()
                }
            }
        }
    }

    public func publish(_ request: PublishRequest) -> EventLoopFuture<PublishResult> {
        if let key = request.idempotencyKey, key.utf8.count > self.limits.maximumIdempotencyKeyBytes {
            return self.eventLoop.makeFailedFuture(
                BrokerError(.invalidRequest, "idempotency key longer than \(self.limits.maximumIdempotencyKeyBytes) bytes"))
        }
        return self.onLoop { self.publishOnLoop(request) }
    }

    /// Orders, stores and delivers one publication. The channel's record is mutated in place in
    /// `channels`: copying it out and back would copy its whole history on every publish.
    private func publishOnLoop(_ request: PublishRequest) -> PublishResult {
        self.eventLoop.assertInEventLoop()
        let now = self.clock()
        let name = request.channel
        let keepsHistory = request.historySize > 0 && request.historyTTL > 0
        if let key = request.idempotencyKey, let previous = self.channels[name]?.idempotency.lookup(key, now: now) {
            return PublishResult(position: previous, duplicate: true)
        }
        var publication = Publication(offset: 0, data: request.data, info: request.info, time: request.time)
        var position = StreamPosition(offset: 0, epoch: "")
        if keepsHistory {
            if self.channels[name]?.isStale(now: now, metaTTL: self.metaTTL) ?? true {
                self.channels[name] = ChannelHistory()
            }
            if self.channels[name]!.top == 0 {
                self.channels[name]!.epoch = self.unbornEpoch(name, now: now)
            }
            self.channels[name]!.top &+= 1
            publication.offset = self.channels[name]!.top
            self.channels[name]!.entries.append(.init(publication: publication, expiresAt: now + request.historyTTL))
            self.channels[name]!.trim(maximumCount: request.historySize, now: now)
            self.channels[name]!.lastPublish = now
            position = StreamPosition(offset: publication.offset, epoch: self.channels[name]!.epoch)
        }
        if let key = request.idempotencyKey {
            if self.channels[name] == nil { self.channels[name] = ChannelHistory() }
            self.channels[name]!.idempotency.remember(
                key, position: position, expiresAt: now + request.idempotencyWindow, now: now,
                capacity: self.limits.maximumIdempotencyKeysPerChannel)
        }
        if self.subscribed.contains(name), let handler = self.handler {
            handler(.publication(channel: name, publication, epoch: position.epoch))
        }
        return PublishResult(position: position)
    }

    /// The epoch of a channel that has no stored meta: the one its first publication will get.
    private func unbornEpoch(_ channel: String, now: Double) -> String {
        StreamEpoch.unborn(seed: self.epochSeed, channel: channel, now: now, metaTTL: self.metaTTL)
    }

    public func publishPresenceEvent(_ event: PresenceEvent, channel: String) -> EventLoopFuture<Void> {
        self.onLoop {
            if self.subscribed.contains(channel), let handler = self.handler {
                handler(.presence(channel: channel, event))
            }
        }
    }

    public func subscribe(channel: String) -> EventLoopFuture<Void> {
        self.onLoop { _ = self.subscribed.insert(channel) }
    }

    public func unsubscribe(channel: String) -> EventLoopFuture<Void> {
        self.onLoop { _ = self.subscribed.remove(channel) }
    }

    /// Reads never create a record: an unknown (or forgotten) channel reports offset 0 and the
    /// epoch its first publication will get. An offset past the top (up to `UInt64.max`) reads nothing.
    public func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        self.onLoop {
            let now = self.clock()
            let name = query.channel
            // No local copy of the record: it would share (and so force a copy of) its storage below.
            guard let top = self.channels[name]?.top, top > 0, self.channels[name]?.isStale(now: now, metaTTL: self.metaTTL) == false
            else {
                return HistoryResult(publications: [], position: StreamPosition(offset: 0, epoch: self.unbornEpoch(name, now: now)))
            }
            self.channels[name]!.entries.dropExpired(now: now)
            let position = StreamPosition(offset: top, epoch: self.channels[name]!.epoch)
            let publications = self.channels[name]!.read(since: query.sinceOffset, limit: query.limit, reverse: query.reverse)
            return HistoryResult(publications: publications, position: position)
        }
    }

    /// At most `limits.maximumPresencePerChannel` entries per channel: past it, clients already
    /// present are refreshed and new ones are not listed.
    public func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        self.onLoop {
            guard !clients.isEmpty else { return }
            let now = self.clock()
            let expiry = now + ttl
            guard expiry > now else { return }
            let capacity = self.limits.maximumPresencePerChannel
            var entries = self.presenceByChannel.removeValue(forKey: channel) ?? [:]
            for info in clients {
                if entries[info.client] == nil, entries.count >= capacity {
                    entries = entries.filter { $0.value.expiresAt > now }
                    if entries.count >= capacity { continue }
                }
                entries[info.client] = (info, expiry)
            }
            if !entries.isEmpty { self.presenceByChannel[channel] = entries }
        }
    }

    public func removePresence(channel: String, client: String) -> EventLoopFuture<Void> {
        self.onLoop {
            self.presenceByChannel[channel]?[client] = nil
            if self.presenceByChannel[channel]?.isEmpty == true { self.presenceByChannel[channel] = nil }
        }
    }

    public func presence(channel: String) -> EventLoopFuture<[ClientInfo]> {
        self.onLoop {
            let now = self.clock()
            guard var entries = self.presenceByChannel[channel] else { return [] }
            entries = entries.filter { $0.value.expiresAt > now }
            self.presenceByChannel[channel] = entries.isEmpty ? nil : entries
            return entries.values.map(\.info).sorted { $0.client < $1.client }
        }
    }

    public func announce(_ node: NodeInfo, ttl: Double) -> EventLoopFuture<Void> {
        self.onLoop { self.registry[node.id] = (node, self.clock() + ttl) }
    }

    public func removeNode(id: String) -> EventLoopFuture<Void> {
        self.onLoop { self.registry[id] = nil }
    }

    public func nodes() -> EventLoopFuture<[NodeInfo]> {
        self.onLoop {
            let now = self.clock()
            self.registry = self.registry.filter { $0.value.expiresAt > now }
            return self.registry.values.map(\.node).sorted { $0.id < $1.id }
        }
    }

    public func sendControl(_ message: ControlMessage, to node: String?) -> EventLoopFuture<Void> {
        self.onLoop { self.handler?(.control(message)) }
    }

    public func shutdown() -> EventLoopFuture<Void> {
        self.onLoop {
            self.sweepTask?.cancel()
            self.sweepTask = nil
            self.handler = nil
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
    }

    /// Counts what the broker holds now.
    public func footprint() -> EventLoopFuture<Footprint> {
        self.onLoop {
            Footprint(
                channels: self.channels.count,
                publications: self.channels.values.reduce(0) { $0 + $1.entries.count },
                idempotencyKeys: self.channels.values.reduce(0) { $0 + $1.idempotency.count },
                presenceChannels: self.presenceByChannel.count,
                presenceEntries: self.presenceByChannel.values.reduce(0) { $0 + $1.count },
                subscriptions: self.subscribed.count
            )
        }
    }

    /// Where a channel's stored publications live: tests check that publishes neither copy nor
    /// reallocate them (the storage of a full history keeps its address and capacity).
    struct HistoryStorage: Sendable, Hashable {
        var address: UInt
        var capacity: Int
    }

    func historyStorage(channel: String) -> EventLoopFuture<HistoryStorage?> {
        self.onLoop {
            guard self.channels[channel] != nil else { return nil }
            let address = self.channels[channel]!.entries.storageIdentity.map { UInt(bitPattern: $0) } ?? 0
            return HistoryStorage(address: address, capacity: self.channels[channel]!.entries.capacity)
        }
    }

    /// Runs the periodic sweep now (tests drive it with an injected clock).
    public func sweepNow() -> EventLoopFuture<Void> {
        self.onLoop { self.sweep() }
    }

    /// Drops expired history, idempotency keys, presence and records left holding nothing, so that a
    /// channel with no publications in its history window, no subscribers and no presence costs nothing.
    private func sweep() {
        let now = self.clock()
        for name in Array(self.channels.keys) {
            if self.channels[name]!.isStale(now: now, metaTTL: self.metaTTL) {
                // Position forgotten; idempotency keys still in their window stay.
                self.channels[name]!.top = 0
                self.channels[name]!.entries.removeFirst(self.channels[name]!.entries.count)
            }
            self.channels[name]!.entries.dropExpired(now: now)
            self.channels[name]!.idempotency.dropExpired(now: now)
            if self.channels[name]!.isEmpty(now: now, metaTTL: self.metaTTL) { self.channels[name] = nil }
        }
        for (channel, entries) in self.presenceByChannel {
            let live = entries.filter { $0.value.expiresAt > now }
            self.presenceByChannel[channel] = live.isEmpty ? nil : live
        }
        self.registry = self.registry.filter { $0.value.expiresAt > now }
    }
}
