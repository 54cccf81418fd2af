import CoreMetrics
import Logging
import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// A request to join a channel, from a session to the hub.
struct JoinRequest: Sendable {
    var id: SubscriptionID
    var loopIndex: Int
    var channel: String
    var since: StreamPosition?
    var options: NamespaceOptions
    var client: ClientInfo
    /// The most bytes of publications a recovery can put in the subscriber's reply (nil: no bound):
    /// the history read stops there (`HistoryQuery.maximumBytes`).
    var recoveryBytes: Int? = nil
    /// Where each history read of a recovery is charged (nil: nowhere; a trusted proxy's own
    /// address, tests). Charged by the hub as each read completes, so a subscriber gone meanwhile
    /// pays all the same.
    var historyCharge: HistoryReadCharge? = nil
}

/// The node's hub: one `HubShard` per event loop, each owning the channels
/// whose names hash to it (`ChannelShard`), and the node-wide work that is not
/// per message.
///
/// Per-channel work (joins, leaves, publications, refills, presence batches)
/// is routed to the owning shard and runs there: a call made on the shard's
/// own loop runs at once, with no hop; from another loop it is one task on
/// the shard's loop. There is no lock and no node-wide queue on that path.
///
/// Node-wide work lives on the home loop (`eventLoop`, the first loop, where
/// the broker delivers control messages): the session directory (per
/// connection, not per message), control messages between nodes, commands
/// forwarded to other nodes, figures and gauges.
final class Hub: @unchecked Sendable {
    // @unchecked: node-wide state is touched only on `eventLoop`; per-channel state lives in the shards, each on its own loop.
    /// The home loop: the session directory, control messages and figures.
    let eventLoop: any EventLoop
    let broker: any Broker
    let logger: Logger
    /// One per event loop of the node, in the loops' order.
    let shards: [HubShard]

    /// One per shard, same loops; set once by `start`, before any session exists, and only read after.
    private(set) var fanouts: [LoopFanout] = []

    // Confined to `eventLoop`.
    /// Where each session is (for the server API and control messages).
    var directory = SessionDirectory()
    var gaugeTimer: RepeatedTask?
    /// SSE commands forwarded to other nodes, waiting for their outcome.
    var forwardedCommands: [UInt64: (promise: EventLoopPromise<SessionCommandOutcome>, timeout: Scheduled<Void>)] = [:]
    /// Whether SSE commands are still forwarded to other nodes: not once the hub stopped (the
    /// answers could not arrive, and the timers would not run).
    var forwardsCommands = true
    var nextCorrelation: UInt64 = 0

    /// Where figures go once a second (set before `start`; read by the shards).
    var metricsSink: NodeMetrics?

    /// A hub with one shard per loop of `eventLoops` (the node's loops, in the order of its
    /// `LoopFanout`s); the first is the home loop.
    init(
        eventLoops: [any EventLoop],
        broker: any Broker,
        presenceTTL: Double,
        positionCheckInterval: TimeAmount = .seconds(5),
        logger: Logger
    ) {
        precondition(!eventLoops.isEmpty, "a hub needs an event loop")
        self.eventLoop = eventLoops[0]
        self.broker = broker
        self.logger = logger
        self.shards = eventLoops.enumerated().map { index, loop in
            HubShard(
                eventLoop: loop, index: index, broker: broker, presenceTTL: presenceTTL,
                positionCheckInterval: positionCheckInterval, logger: logger)
        }
        for shard in self.shards { shard.hub = self }
    }

    /// A hub with a single shard on `eventLoop` (a node with one loop; tests).
    convenience init(
        eventLoop: any EventLoop,
        broker: any Broker,
        presenceTTL: Double,
        positionCheckInterval: TimeAmount = .seconds(5),
        logger: Logger
    ) {
        self.init(
            eventLoops: [eventLoop], broker: broker, presenceTTL: presenceTTL,
            positionCheckInterval: positionCheckInterval, logger: logger)
    }

    /// The shard that owns `channel`.
    @inline(__always)
    func shard(for channel: String) -> HubShard {
        self.shards[ChannelShard.index(of: channel, count: self.shards.count)]
    }

    /// Connects the shards to the per-loop fan-outs (one per shard, same loops, same order) and
    /// starts taking broker events.
    func start(fanouts: [LoopFanout]) -> EventLoopFuture<Void> {
        precondition(
            fanouts.count == self.shards.count && zip(fanouts, self.shards).allSatisfy { $0.eventLoop === $1.eventLoop },
            "one fan-out per hub shard, on the same loops")
        self.fanouts = fanouts
        let shardsStarted = self.shards.map { $0.start(fanouts: fanouts) }
        return EventLoopFuture.andAllSucceed(shardsStarted, on: self.eventLoop).flatMap {
            self.eventLoop.submit {
                self.gaugeTimer = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                    self.reportGauges()
                }
            }
        }.flatMap {
            self.broker.start { [self] event in self.route(event) }
        }
    }

    /// Stops the shards and the timers, and answers forwarded commands still waiting; the future
    /// completes once every shard's last presence writes were answered by the broker (see
    /// `HubShard.stop()`). The hub's own part does not wait for the broker: a node that gives up
    /// waiting for a slow one must not leave forwards without an answer.
    func stop() -> EventLoopFuture<Void> {
        let own = self.eventLoop.submit {
            self.gaugeTimer?.cancel()
            self.gaugeTimer = nil
            self.stopForwarding()
        }
        return EventLoopFuture.andAllComplete([own] + self.shards.map { $0.stop() }, on: self.eventLoop)
    }

    // MARK: Routing

    /// A broker event to whoever owns it: a channel's to its shard (at once when the broker
    /// delivers on that shard's loop), control messages to the home loop, an interruption to
    /// every shard. Tasks on one loop run in order, so a channel's events keep their order.
    func route(_ event: BrokerEvent) {
        switch event {
        case .publication(let name, _, _), .presence(let name, _):
            let shard = self.shard(for: name)
            if shard.eventLoop.inEventLoop {
                shard.handle(event)  // no closure: the memory broker delivers on the shard's loop
            } else if let backlog = shard.backlog {
                let weight = FanoutOp.baseWeight + event.payloadBytes
                backlog.add(weight)
                shard.eventLoop.execute {
                    shard.handle(event)
                    backlog.remove(weight)
                }
            } else {
                shard.eventLoop.execute { shard.handle(event) }
            }
        case .control(let message):
            if self.eventLoop.inEventLoop {
                self.handleControl(message)
            } else {
                self.eventLoop.execute { self.handleControl(message) }
            }
        case .deliveryInterrupted:
            for shard in self.shards { shard.run { shard.handle(event) } }
        }
    }

    // MARK: Sessions

    func register(client: String, user: String, loopIndex: Int, transport: TransportName = .websocket) {
        self.eventLoop.execute {
            self.directory.register(client: client, user: user, loop: loopIndex, transport: transport)
        }
    }

    func unregister(client: String, user: String, transport: TransportName = .websocket) {
        self.eventLoop.execute {
            self.directory.unregister(client: client, user: user, transport: transport)
        }
    }

    // MARK: Channels (on the owning shard)

    /// A session asks to join a channel; the activation or refusal comes back in its loop's batch.
    func join(_ request: JoinRequest) {
        let shard = self.shard(for: request.channel)
        shard.run { shard.join(request) }
    }

    /// A session left a channel (unsubscribe, disconnect, or an activation that found the session gone).
    func leave(channel name: String, id: SubscriptionID) {
        let shard = self.shard(for: name)
        shard.run { shard.leave(channel: name, id: id) }
    }

    /// The clients present in `channel`, read after the owning shard's changes to it not yet
    /// written (`HubShard.presence(channel:)`).
    func presence(channel: String) -> EventLoopFuture<[ClientInfo]> {
        let shard = self.shard(for: channel)
        guard shard.eventLoop.inEventLoop else {
            return shard.eventLoop.flatSubmit { shard.presence(channel: channel) }
        }
        return shard.presence(channel: channel)
    }

    /// Publishes for a session on loop `loop`; `callback` runs on that loop with the broker's answer.
    ///
    /// The publish runs on the channel's shard (inline when that is the session's loop: the memory
    /// broker orders, stores and delivers there at once, so nothing hops). When the answer comes on
    /// the shard's loop it joins the shard's batch for `loop`, after the publication itself, so the
    /// reply and the echo reach the socket in one flush and one hop; an answer from elsewhere (Redis)
    /// goes straight to the session's loop. The callback marks its session dirty; whoever runs it
    /// flushes.
    func publish(_ request: PublishRequest, loop: Int, session: ClientSession, ticket: PublishTicket) {
        let bound = NIOLoopBound(session, eventLoop: self.fanouts[loop].eventLoop)
        let shard = self.shard(for: request.channel)
        if shard.eventLoop.inEventLoop {
            self.publish(request, on: shard, loop: loop, session: bound, ticket: ticket)
        } else {
            shard.eventLoop.execute { self.publish(request, on: shard, loop: loop, session: bound, ticket: ticket) }
        }
    }

    /// On `shard`'s loop. A broker with the channel's state here answers at once (no future, no
    /// closure); another answers through its future.
    private func publish(
        _ request: PublishRequest, on shard: HubShard, loop: Int, session: NIOLoopBound<ClientSession>, ticket: PublishTicket
    ) {
        if let result = self.broker.publishNow(request) {
            shard.enqueue(.publishResult(PublishCompletion(session: session, ticket: ticket, result: result)), loop: loop)
            return
        }
        let fanout = self.fanouts[loop]
        self.broker.publish(request).whenComplete { result in
            let completion = PublishCompletion(session: session, ticket: ticket, result: result)
            if shard.eventLoop.inEventLoop {
                shard.enqueue(.publishResult(completion), loop: loop)
            } else if fanout.eventLoop.inEventLoop {
                completion.run()
                fanout.flushDirty()
            } else {
                fanout.eventLoop.execute {
                    completion.run()
                    fanout.flushDirty()
                }
            }
        }
    }

    /// Work for one loop's sessions that is not a channel's (control messages): one task there.
    func send(_ op: FanoutOp, toLoop loop: Int) {
        guard loop < self.fanouts.count else { return }
        let fanout = self.fanouts[loop]
        if fanout.eventLoop.inEventLoop {
            fanout.apply([op])
        } else {
            fanout.eventLoop.execute { fanout.apply([op]) }
        }
    }

    // MARK: Figures

    func reportGauges() {
        guard let sink = self.metricsSink else { return }
        for transport in TransportName.allCases {
            sink.connections[transport.index].record(self.directory.countByTransport[transport.index])
        }
        sink.deliveryBacklog.record(self.broker.deliveryBacklog?.weight ?? 0)
        self.shardFigures().whenSuccess { figures in
            sink.subscriptions.record(figures.subscriptions)
            sink.channels.record(figures.channels)
        }
    }

    /// Subscriptions and channels summed over the shards.
    func shardFigures() -> EventLoopFuture<(subscriptions: Int, channels: Int)> {
        EventLoopFuture.whenAllSucceed(self.shards.map { $0.figures() }, on: self.eventLoop).map { parts in
            parts.reduce((0, 0)) { ($0.0 + $1.subscriptions, $0.1 + $1.channels) }
        }
    }

    /// Figures for `info` and the registry.
    func statistics() -> EventLoopFuture<HubStatistics> {
        self.eventLoop.submit { self.directory.count }.and(self.shardFigures()).map { connections, figures in
            HubStatistics(connections: connections, subscriptions: figures.subscriptions, channels: figures.channels)
        }
    }

    /// Active channels with their local subscriber counts, by name.
    func channelList() -> EventLoopFuture<[(name: String, subscribers: Int)]> {
        EventLoopFuture.whenAllSucceed(self.shards.map { $0.channelList() }, on: self.eventLoop).map { lists in
            lists.flatMap { $0 }.sorted { $0.name < $1.name }
        }
    }

    /// Every connected client with its loop (for drain).
    func clients() -> EventLoopFuture<[(client: String, loop: Int)]> {
        self.eventLoop.submit { self.directory.loopByClient.map { ($0.key, $0.value) } }
    }
}

/// What a hub shard counts.
struct HubMetrics: Sendable {
    var gapsDetected = 0
    var insufficientState = 0
    var interruptions = 0
}

struct HubStatistics: Sendable {
    var connections: Int
    var subscriptions: Int
    var channels: Int
}
