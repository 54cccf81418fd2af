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
/// missed. A subscriber that loses its node asks for a fresh map. Those rules are
/// `RedisShardPlacement`'s, a value; this class performs its actions.
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
    private let readHold: RedisReadHold?

    // Confined to `eventLoop`.
    private var placement = RedisShardPlacement<EventLoopPromise<Void>>()
    private var subscribers: [RedisNodeAddress: RedisSubscriber] = [:]
    /// `idle` until the first subscribe registers for slot map changes; `closed` for good.
    private enum Lifecycle {
        case idle
        case observing
        case closed
    }

    private var lifecycle = Lifecycle.idle
    private var closed: Bool {
        if case .closed = self.lifecycle { return true }
        return false
    }
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
        onResubscribed: @escaping @Sendable () -> Void,
        readHold: RedisReadHold? = nil
    ) {
        self.readHold = readHold
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
            self.perform(self.placement.subscribe(name, waiter: promise, owner: self.owner(of: name)))
        }
        return promise.futureResult
    }

    /// Unsubscribes (completes at once; later messages for the channel are not delivered).
    public func unsubscribe(_ name: String) -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            self.perform(self.placement.unsubscribe(name), failure: RedisError(.connectionClosed, "SSUBSCRIBE \(name) withdrawn"))
        }
    }

    /// Channels confirmed by their masters now (probe channels left out), for tests.
    public var subscribedChannels: EventLoopFuture<[String: RedisNodeAddress]> {
        self.eventLoop.submit {
            self.placement.subscribed.filter { !self.isProbe($0.key) }
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
            self.lifecycle = .closed
            self.retryTask?.cancel()
            self.retryTask = nil
            self.probeTask?.cancel()
            self.probeTask = nil
            self.probes = [:]
            let error = RedisError(.connectionClosed, "subscriber closed")
            for waiter in self.placement.close() { waiter.fail(error) }
            let subscribers = Array(self.subscribers.values)
            self.subscribers.removeAll()
            return EventLoopFuture.andAllComplete(subscribers.map { $0.close() }, on: self.eventLoop)
        }
    }

    // MARK: Placing channels

    private func observeIfNeeded() {
        guard case .idle = self.lifecycle else { return }
        self.lifecycle = .observing
        self.client.observeSlotMap { [weak self] map in self?.slotMapChanged(map) }
    }

    /// The master of `name`'s slot in the map now (nil before the first map, or when no master serves it).
    private func owner(of name: String) -> RedisNodeAddress? {
        self.client.currentSlotMap?.node(forSlot: RedisHashSlot.slot(of: name))
    }

    /// Does what the placement decided. `failure`: the error waiters fail with.
    private func perform(
        _ actions: [RedisShardPlacement<EventLoopPromise<Void>>.Action],
        failure: @autoclosure () -> any Error = RedisError(.connectionClosed, "SSUBSCRIBE failed")
    ) {
        for action in actions {
            switch action {
            case .subscribe(let name, let node):
                self.subscriber(node).subscribe(name).whenComplete { result in
                    self.placed(name, on: node, result)
                }
            case .unsubscribe(let name, let node):
                _ = self.subscribers[node]?.unsubscribe(name)
            case .succeed(let waiters):
                for waiter in waiters { waiter.succeed() }
            case .fail(let waiters):
                let error = failure()
                for waiter in waiters { waiter.fail(error) }
            case .refreshMapAndRetry:
                self.client.refreshSlotMap()  // the observer places them, or the retry
                self.scheduleRetry()
            case .followRedirection(let redirection, let name):
                self.client.noteMoved(redirection)  // may place it already, through the observer
                if self.placement.isWaiting(name) { self.perform(self.placement.place(name, owner: self.owner(of: name))) }
            case .tellResubscribed:
                self.onResubscribed()
            }
        }
    }

    private func placed(_ name: String, on node: RedisNodeAddress, _ result: Result<Void, any Error>) {
        guard !self.closed else { return }
        switch result {
        case .success:
            self.perform(self.placement.confirmed(name, on: node))
        case .failure(let error):
            var redirection = (error as? RedisError).flatMap { RedisRedirection(errorMessage: $0.message) }
            // An empty host (`cluster-preferred-endpoint-type unknown-endpoint`) means the node that answered.
            if redirection?.address.host.isEmpty == true { redirection?.address.host = node.host }
            self.perform(self.placement.refused(name, on: node, redirection: redirection), failure: error)
        }
    }

    private func scheduleRetry() {
        guard self.retryTask == nil, !self.closed else { return }
        self.retryTask = self.eventLoop.scheduleTask(in: .seconds(1)) {
            self.retryTask = nil
            self.perform(self.placement.retry(owner: self.owner(of:)))
        }
    }

    /// Moves every channel whose master changed; closes subscribers of nodes that serve nothing now.
    private func slotMapChanged(_ map: RedisClusterSlotMap) {
        guard !self.closed else { return }
        self.perform(self.placement.mapChanged { map.node(forSlot: RedisHashSlot.slot(of: $0)) })
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
        // A probe sent before reads were held back on purpose may be waiting behind the held
        // messages: its time counts from the last hold.
        for node in Array(self.probes.keys) {
            if let held = self.subscribers[node]?.lastHeldRead { self.probes[node]?.readsHeld(at: held) }
        }
        var carrying: Set<RedisNodeAddress> = []
        for (name, node) in self.placement.subscribed where !self.isProbe(name) { carrying.insert(node) }
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
                self.perform(self.placement.subscribe(channel, waiter: nil, owner: node))
                continue
            }
            guard self.placement.channels[probe.channel]?.phase == .subscribed(node) else { continue }
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
        self.perform(self.placement.unsubscribe(channel))
    }

    private func subscriber(_ node: RedisNodeAddress) -> RedisSubscriber {
        if let subscriber = self.subscribers[node] { return subscriber }
        let subscriber = RedisSubscriber(
            configuration: self.client.configuration.node(node),
            eventLoop: self.eventLoop,
            logger: self.logger,
            sharded: true,
            onMessage: { [weak self] name, payload in
                guard let self, self.placement.node(of: name) == node else { return }
                if self.isProbe(name) {
                    if self.probes[node]?.channel == name { self.probes[node]?.delivered(payload) }
                    return
                }
                self.onMessage(name, payload)
            },
            onResubscribed: { [weak self] in self?.onResubscribed() },
            onDropped: { [weak self] name in
                guard let self else { return }
                self.perform(self.placement.dropped(name, on: node))
            },
            onConnectionProblem: { [weak self] in self?.client.refreshSlotMap() },
            readHold: self.readHold
        )
        self.subscribers[node] = subscriber
        return subscriber
    }
}
