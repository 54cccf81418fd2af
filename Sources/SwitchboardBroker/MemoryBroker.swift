public import NIOCore
public import SwitchboardCore
import Foundation

/// A broker inside one process: the single-node default.
///
/// All state is confined to `eventLoop`; calls from other threads hop there
/// once. Publication, history append and delivery happen in one step on that
/// loop, so delivery order is offset order.
public final class MemoryBroker: Broker, @unchecked Sendable {
    public let eventLoop: any EventLoop
    private let clock: @Sendable () -> Double

    // Everything below is touched only on `eventLoop`.
    private var handler: (@Sendable (BrokerEvent) -> Void)?
    private var channels: [String: ChannelHistory] = [:]
    private var subscribed: Set<String> = []
    private var presenceByChannel: [String: [String: (info: ClientInfo, expiresAt: Double)]] = [:]
    private var registry: [String: (node: NodeInfo, expiresAt: Double)] = [:]
    private var sweepTask: RepeatedTask?

    /// How long a channel's epoch and top offset outlive its last publication.
    public let metaTTL: Double

    /// - Parameters:
    ///   - eventLoop: the loop that owns the broker's state and delivers events.
    ///   - metaTTL: seconds a channel's epoch and offset are kept after its last publication.
    ///   - clock: seconds since 1970; injectable for tests.
    public init(
        eventLoop: any EventLoop,
        metaTTL: Double = 86_400,
        clock: @escaping @Sendable () -> Double = MemoryBroker.systemClock
    ) {
        self.eventLoop = eventLoop
        self.metaTTL = metaTTL
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
        self.onLoop { self.publishOnLoop(request) }
    }

    private func publishOnLoop(_ request: PublishRequest) -> PublishResult {
        let now = self.clock()
        let keepsHistory = request.historySize > 0 && request.historyTTL > 0
        var history = self.channels[request.channel] ?? ChannelHistory(epoch: Self.makeEpoch())
        if let key = request.idempotencyKey {
            if let previous = history.idempotency[key], previous.expiresAt > now {
                return PublishResult(position: previous.position, duplicate: true)
            }
        }
        if keepsHistory, history.isStale(now: now, metaTTL: self.metaTTL) {
            history = ChannelHistory(epoch: Self.makeEpoch())
        }
        var publication = Publication(offset: 0, data: request.data, info: request.info, time: request.time)
        var position = StreamPosition(offset: 0, epoch: "")
        if keepsHistory {
            history.top += 1
            publication.offset = history.top
            history.entries.append((publication, now + request.historyTTL))
            history.trim(maximumCount: request.historySize, now: now)
            history.lastPublish = now
            position = StreamPosition(offset: history.top, epoch: history.epoch)
        }
        if let key = request.idempotencyKey {
            history.idempotency[key] = (position, now + request.idempotencyWindow)
        }
        if keepsHistory || request.idempotencyKey != nil {
            self.channels[request.channel] = history
        }
        if self.subscribed.contains(request.channel), let handler = self.handler {
            handler(.publication(channel: request.channel, publication, epoch: position.epoch))
        }
        return PublishResult(position: position)
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

    public func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        self.onLoop {
            let now = self.clock()
            guard var history = self.channels[query.channel], !history.isStale(now: now, metaTTL: self.metaTTL) else {
                // Unknown (or forgotten) channel: a fresh epoch so positions from an earlier life do not match.
                let fresh = ChannelHistory(epoch: Self.makeEpoch())
                self.channels[query.channel] = fresh
                return HistoryResult(publications: [], position: StreamPosition(offset: 0, epoch: fresh.epoch))
            }
            history.dropExpired(now: now)
            self.channels[query.channel] = history
            let position = StreamPosition(offset: history.top, epoch: history.epoch)
            guard query.limit != 0 else { return HistoryResult(publications: [], position: position) }
            var publications = Array(
                history.entries.lazy.map(\.publication).filter { $0.offset > (query.sinceOffset ?? 0) }
            )
            if query.reverse { publications.reverse() }
            if query.limit > 0, publications.count > query.limit {
                publications.removeLast(publications.count - query.limit)
            }
            return HistoryResult(publications: publications, position: position)
        }
    }

    public func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        self.onLoop {
            guard !clients.isEmpty else { return }
            let expiry = self.clock() + ttl
            for info in clients { self.presenceByChannel[channel, default: [:]][info.client] = (info, expiry) }
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

    /// Drops expired history, idempotency keys, presence and forgotten channels, so memory stays bounded.
    private func sweep() {
        let now = self.clock()
        for (name, var history) in self.channels {
            if history.isStale(now: now, metaTTL: self.metaTTL) {
                self.channels[name] = nil
                continue
            }
            history.dropExpired(now: now)
            history.dropExpiredIdempotencyKeys(now: now)
            self.channels[name] = history
        }
        for (channel, entries) in self.presenceByChannel {
            let live = entries.filter { $0.value.expiresAt > now }
            self.presenceByChannel[channel] = live.isEmpty ? nil : live
        }
        self.registry = self.registry.filter { $0.value.expiresAt > now }
    }

    static func makeEpoch() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return String((0..<8).map { _ in alphabet.randomElement()! })
    }
}

/// One channel's stream in the memory broker.
struct ChannelHistory {
    var epoch: String
    var top: UInt64 = 0
    var entries: [(publication: Publication, expiresAt: Double)] = []
    var lastPublish: Double = 0
    var idempotency: [String: (position: StreamPosition, expiresAt: Double)] = [:]

    init(epoch: String) {
        self.epoch = epoch
    }

    /// Meta (epoch, top offset) is forgotten `metaTTL` after the last publication.
    func isStale(now: Double, metaTTL: Double) -> Bool {
        self.top > 0 && self.lastPublish + metaTTL <= now
    }

    mutating func dropExpired(now: Double) {
        if let firstLive = self.entries.firstIndex(where: { $0.expiresAt > now }) {
            if firstLive > 0 { self.entries.removeFirst(firstLive) }
        } else {
            self.entries.removeAll()
        }
    }

    mutating func trim(maximumCount: Int, now: Double) {
        self.dropExpired(now: now)
        if self.entries.count > maximumCount {
            self.entries.removeFirst(self.entries.count - maximumCount)
        }
    }

    mutating func dropExpiredIdempotencyKeys(now: Double) {
        if self.idempotency.isEmpty { return }
        self.idempotency = self.idempotency.filter { $0.value.expiresAt > now }
    }
}
