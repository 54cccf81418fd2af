public import Logging
public import NIOCore
import RESP

/// Shard channels of a Redis Cluster (`SSUBSCRIBE`), each subscribed on the master serving its
/// slot, so that a publication (`SPUBLISH`) travels to that master only instead of to every node
/// of the cluster as a classic `PUBLISH` does.
///
/// One `RedisSubscriber` per master, made when a channel first needs it. Where a channel goes is
/// the slot map of the `RedisClusterClient` on the same loop; when the map changes (a failover, a
/// resharding, a `MOVED` answer to `SSUBSCRIBE`, or a subscription Redis dropped because its slot
/// moved), the channels whose master changed are subscribed where the map now says and, once they
/// are confirmed, the owner is told (`onResubscribed`), because publications made meanwhile were
/// missed. A subscriber that loses its node asks for a fresh map.
///
/// With `startProbing`, each master's subscriber connection that carries channels is checked: a probe
/// published (`SPUBLISH`) on a shard channel of that master every interval must come back through it
/// (`RedisShardProbe`); a connection that stays open but delivers nothing is rebuilt, and the owner told.
public final class RedisClusterSubscriber: @unchecked Sendable {
    // @unchecked: the `var`s are touched only on `eventLoop` (every entry point hops there).
    public let eventLoop: any EventLoop
    private let client: RedisClusterClient
    private let logger: Logger
    private let onMessage: @Sendable (String, ByteBuffer) -> Void
    private let onResubscribed: @Sendable () -> Void

    /// Attempts to place one channel before its callers fail.
    static let maximumAttempts = 5

    /// A channel that is wanted, and where.
    private struct Wanted {
        /// The master it is subscribed (or being subscribed) on; nil while it waits for a map.
        var node: RedisNodeAddress?
        var confirmed = false
        var waiters: [EventLoopPromise<Void>] = []
        var attempts = 0
    }

    // Confined to `eventLoop`.
    private var wanted: [String: Wanted] = [:]
    private var subscribers: [RedisNodeAddress: RedisSubscriber] = [:]
    private var observing = false
    private var closed = false
    /// Channels were moved after messages may have been missed: tell the owner once all are confirmed.
    private var interrupted = false
    /// Retries channels that wait for a master (their slot unserved in the map, or a subscribe that
    /// failed), once a second while there are any.
    private var retryTask: Scheduled<Void>?
    /// The probe of each master's connection, while probing; `probePrefix` names their channels.
    private var probes: [RedisNodeAddress: RedisShardProbe] = [:]
    private var probePrefix: String?
    private var probeTask: RepeatedTask?

    /// - Parameters:
    ///   - client: the cluster client whose slot map places the channels (on the same loop).
    ///   - onMessage: a message on a subscribed shard channel.
    ///   - onResubscribed: subscriptions were lost and are back (elsewhere, or after a reconnect):
    ///     messages may have been missed.
    public init(
        client: RedisClusterClient,
        logger: Logger,
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        onResubscribed: @escaping @Sendable () -> Void
    ) {
        self.client = client
        self.eventLoop = client.eventLoop
        self.logger = logger
        self.onMessage = onMessage
        self.onResubscribed = onResubscribed
    }

    /// Subscribes `name` on the master of its slot; completes when that master confirms.
    public func subscribe(_ name: String) -> EventLoopFuture<Void> {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.eventLoop.execute {
            guard !self.closed else { return promise.fail(RedisError(.connectionClosed, "subscriber closed")) }
            self.observeIfNeeded()
            if var entry = self.wanted[name] {
                if entry.confirmed { return promise.succeed() }
                entry.waiters.append(promise)
                self.wanted[name] = entry
                return
            }
            self.wanted[name] = Wanted(waiters: [promise])
            self.place(name)
        }
        return promise.futureResult
    }

    /// Unsubscribes (completes at once; later messages for the channel are not delivered).
    public func unsubscribe(_ name: String) -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            guard let entry = self.wanted.removeValue(forKey: name) else { return }
            let error = RedisError(.connectionClosed, "SSUBSCRIBE \(name) withdrawn")
            for waiter in entry.waiters { waiter.fail(error) }
            if let node = entry.node { _ = self.subscribers[node]?.unsubscribe(name) }
        }
    }

    /// Channels confirmed by their masters now (probe channels left out), for tests.
    public var subscribedChannels: EventLoopFuture<[String: RedisNodeAddress]> {
        self.eventLoop.submit {
            var confirmed: [String: RedisNodeAddress] = [:]
            for (name, entry) in self.wanted where entry.confirmed && !self.isProbe(name) { confirmed[name] = entry.node }
            return confirmed
        }
    }

    /// Checks every master's subscriber connection that carries channels every `interval`, on
    /// channels named `prefix:{tag}` (a prefix of this subscriber's own: other subscribers' probes
    /// must not reach it).
    public func startProbing(prefix: String, every interval: TimeAmount) {
        self.eventLoop.execute {
            guard !self.closed, self.probeTask == nil else { return }
            self.probePrefix = prefix
            self.probeTask = self.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                self.probeTick(interval: interval)
            }
        }
    }

    public func close() -> EventLoopFuture<Void> {
        self.eventLoop.flatSubmit {
            self.closed = true
            self.retryTask?.cancel()
            self.retryTask = nil
            self.probeTask?.cancel()
            self.probeTask = nil
            self.probes = [:]
            let error = RedisError(.connectionClosed, "subscriber closed")
            for entry in self.wanted.values { for waiter in entry.waiters { waiter.fail(error) } }
            self.wanted.removeAll()
            let subscribers = Array(self.subscribers.values)
            self.subscribers.removeAll()
            return EventLoopFuture.andAllComplete(subscribers.map { $0.close() }, on: self.eventLoop)
        }
    }

    // MARK: Placing channels

    private func observeIfNeeded() {
        guard !self.observing else { return }
        self.observing = true
        self.client.observeSlotMap { [weak self] map in self?.slotMapChanged(map) }
    }

    /// Subscribes `name` where the map says, or asks for a map and waits for it.
    private func place(_ name: String) {
        guard !self.closed, var entry = self.wanted[name] else { return }
        guard let node = self.client.currentSlotMap?.node(forSlot: RedisHashSlot.slot(of: name)) else {
            entry.node = nil
            self.wanted[name] = entry
            self.client.refreshSlotMap()  // the observer places it, or the retry
            self.scheduleRetry()
            return
        }
        entry.node = node
        entry.confirmed = false
        self.wanted[name] = entry
        self.subscriber(node).subscribe(name).whenComplete { result in
            self.placed(name, on: node, result)
        }
    }

    private func placed(_ name: String, on node: RedisNodeAddress, _ result: Result<Void, any Error>) {
        guard var entry = self.wanted[name], entry.node == node, !self.closed else { return }  // withdrawn or moved meanwhile
        switch result {
        case .success:
            let waiters = entry.waiters
            entry.confirmed = true
            entry.attempts = 0
            entry.waiters = []
            self.wanted[name] = entry
            for waiter in waiters { waiter.succeed() }
            if self.interrupted, !self.wanted.values.contains(where: { !$0.confirmed }) {
                self.interrupted = false
                self.onResubscribed()
            }
        case .failure(let error):
            entry.attempts += 1
            entry.node = nil
            guard entry.attempts < Self.maximumAttempts else {
                self.wanted[name] = nil
                for waiter in entry.waiters { waiter.fail(error) }
                return
            }
            self.wanted[name] = entry
            if let error = error as? RedisError, let redirection = RedisRedirection(errorMessage: error.message) {
                self.client.noteMoved(redirection)  // may place it already, through the observer
                if self.wanted[name]?.node == nil { self.place(name) }
            } else {
                self.client.refreshSlotMap()
                self.scheduleRetry()
            }
        }
    }

    /// Redis dropped a confirmed subscription unasked: its slot moved. It goes where a fresh map says.
    private func dropped(_ name: String, on node: RedisNodeAddress) {
        guard var entry = self.wanted[name], entry.node == node else { return }
        entry.node = nil
        entry.confirmed = false
        self.wanted[name] = entry
        self.interrupted = true
        self.client.refreshSlotMap()
        self.scheduleRetry()
    }

    private func scheduleRetry() {
        guard self.retryTask == nil, !self.closed else { return }
        self.retryTask = self.eventLoop.scheduleTask(in: .seconds(1)) {
            self.retryTask = nil
            for (name, entry) in self.wanted where entry.node == nil { self.place(name) }
        }
    }

    /// Moves every channel whose master changed; closes subscribers of nodes that serve nothing now.
    private func slotMapChanged(_ map: RedisClusterSlotMap) {
        guard !self.closed else { return }
        for (name, entry) in self.wanted {
            let owner = map.node(forSlot: RedisHashSlot.slot(of: name))
            guard owner != entry.node else { continue }
            if let old = entry.node {
                _ = self.subscribers[old]?.unsubscribe(name)
                if entry.confirmed { self.interrupted = true }
            }
            self.place(name)  // with no master for its slot now, it waits (and is retried)
        }
        for (node, subscriber) in self.subscribers where !map.nodes.contains(node) {
            self.subscribers[node] = nil
            _ = subscriber.close()
        }
    }

    // MARK: Probing

    private func isProbe(_ name: String) -> Bool {
        guard let prefix = self.probePrefix else { return false }
        return name.hasPrefix(prefix) && name.utf8.dropFirst(prefix.utf8.count).first == UInt8(ascii: ":")
    }

    private func probeTick(interval: TimeAmount) {
        guard !self.closed, let prefix = self.probePrefix, let map = self.client.currentSlotMap else { return }
        var carrying: Set<RedisNodeAddress> = []
        for (name, entry) in self.wanted where entry.confirmed && !self.isProbe(name) {
            if let node = entry.node { carrying.insert(node) }
        }
        // Masters that carry nothing now are not probed.
        for (node, probe) in self.probes where !carrying.contains(node) {
            self.probes[node] = nil
            self.withdrawProbe(probe.channel)
        }
        let now = NIODeadline.now()
        for node in carrying {
            if let probe = self.probes[node], map.node(forSlot: RedisHashSlot.slot(of: probe.channel)) != node {
                self.probes[node] = nil  // its slot moved: another channel for this master
                self.withdrawProbe(probe.channel)
            }
            guard let probe = self.probes[node] else {
                guard
                    let channel = RedisShardProbe.channel(prefix: prefix, where: { map.node(forSlot: $0) == node })
                else { continue }
                self.probes[node] = RedisShardProbe(channel: channel)
                self.wanted[channel] = Wanted()
                self.place(channel)
                continue
            }
            guard self.wanted[probe.channel]?.confirmed == true else { continue }
            switch self.probes[node]!.tick(now: now, interval: interval) {
            case .reconnect:
                self.logger.warning("redis shard subscriber delivered no probe; reconnecting it", metadata: ["node": "\(node)"])
                self.subscribers[node]?.reconnect()
            case .publish(let sequence):
                self.client.send(["SPUBLISH", .string(probe.channel), .integer(Int64(truncatingIfNeeded: sequence))]).whenFailure { _ in
                    self.probes[node]?.publishFailed(sequence: sequence)
                }
            }
        }
    }

    private func withdrawProbe(_ channel: String) {
        guard let entry = self.wanted.removeValue(forKey: channel) else { return }
        if let node = entry.node { _ = self.subscribers[node]?.unsubscribe(channel) }
    }

    private func subscriber(_ node: RedisNodeAddress) -> RedisSubscriber {
        if let subscriber = self.subscribers[node] { return subscriber }
        let subscriber = RedisSubscriber(
            configuration: self.client.configuration.node(node),
            eventLoop: self.eventLoop,
            logger: self.logger,
            sharded: true,
            onMessage: { [weak self] name, payload in
                guard let self, self.wanted[name]?.node == node else { return }
                if self.isProbe(name) {
                    if self.probes[node]?.channel == name { self.probes[node]?.delivered(payload) }
                    return
                }
                self.onMessage(name, payload)
            },
            onResubscribed: { [weak self] in self?.onResubscribed() },
            onDropped: { [weak self] name in self?.dropped(name, on: node) },
            onConnectionProblem: { [weak self] in self?.client.refreshSlotMap() }
        )
        self.subscribers[node] = subscriber
        return subscriber
    }
}
