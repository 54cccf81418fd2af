public import Logging
public import NIOCore
public import RedisClient
public import SwitchboardBroker
public import SwitchboardCore

/// The Redis broker of a node with several event loops: one `RedisBroker` per loop, each with its
/// own command and subscriber connections, owning the channels the hub's shard rule
/// (`ChannelShard`) puts on that loop.
///
/// A channel's publications, subscriptions, history and presence go through the shard on the loop
/// of the hub shard that owns the channel, so a publication made there is sent to Redis, answered
/// and delivered back on that one loop. With a single `RedisBroker` every publication whose channel
/// lives on another loop crossed threads on the way out, on the answer and on the delivery.
/// Node-wide work (registry, control messages, connections per user) goes through shard 0, the
/// only one subscribed to the control channels. Each shard probes its own subscriber connection;
/// a shard whose subscriber is rebuilt reports `.deliveryInterrupted`, which refills every channel
/// (more than needed, never less).
public final class ShardedRedisBroker: Broker, Sendable {
    /// One broker per event loop, in the loops' order.
    public let shards: [RedisBroker]
    /// Shared by every shard's subscriber: the node's loops are behind whichever shard's channels they deliver.
    public let deliveryBacklog: DeliveryBacklog?

    /// - Parameter eventLoops: the node's loops, in the order of its hub shards (at least one).
    public init(
        configuration: RedisConfiguration,
        nodeID: String,
        eventLoops: [any EventLoop],
        logger: Logger,
        metaTTL: Double = 86_400,
        probeInterval: TimeAmount = .seconds(2),
        limits: BrokerLimits = BrokerLimits()
    ) {
        precondition(!eventLoops.isEmpty, "a broker needs an event loop")
        let backlog = DeliveryBacklog()
        self.deliveryBacklog = backlog
        self.shards = eventLoops.enumerated().map { index, loop in
            RedisBroker(
                configuration: configuration,
                nodeID: nodeID,
                eventLoop: loop,
                logger: logger,
                metaTTL: metaTTL,
                probeInterval: probeInterval,
                limits: limits,
                shard: index,
                deliveryBacklog: backlog
            )
        }
    }

    public var eventLoop: any EventLoop { self.shards[0].eventLoop }

    public func eventLoop(forChannel channel: String) -> any EventLoop {
        self.shard(channel).eventLoop
    }

    private func shard(_ channel: String) -> RedisBroker {
        self.shards[ChannelShard.index(of: channel, count: self.shards.count)]
    }

    // MARK: Lifecycle

    public func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void> {
        EventLoopFuture.andAllSucceed(self.shards.map { $0.start(eventHandler: eventHandler) }, on: self.eventLoop)
    }

    public func shutdown() -> EventLoopFuture<Void> {
        EventLoopFuture.andAllComplete(self.shards.map { $0.shutdown() }, on: self.eventLoop)
    }

    // MARK: A channel's work, on the channel's shard

    public func publish(_ request: PublishRequest) -> EventLoopFuture<PublishResult> {
        self.shard(request.channel).publish(request)
    }

    public func publishPresenceEvent(_ event: PresenceEvent, channel: String) -> EventLoopFuture<Void> {
        self.shard(channel).publishPresenceEvent(event, channel: channel)
    }

    public func renewEpoch(channel: String, ifStill epoch: String) -> EventLoopFuture<Void> {
        self.shard(channel).renewEpoch(channel: channel, ifStill: epoch)
    }

    public func subscribe(channel: String) -> EventLoopFuture<Void> {
        self.shard(channel).subscribe(channel: channel)
    }

    public func unsubscribe(channel: String) -> EventLoopFuture<Void> {
        self.shard(channel).unsubscribe(channel: channel)
    }

    public func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        self.shard(query.channel).history(query)
    }

    public func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        self.shard(channel).addPresence(channel: channel, clients: clients, ttl: ttl)
    }

    public func removePresence(channel: String, clients: [String]) -> EventLoopFuture<Void> {
        self.shard(channel).removePresence(channel: channel, clients: clients)
    }

    public func presence(channel: String) -> EventLoopFuture<[ClientInfo]> {
        self.shard(channel).presence(channel: channel)
    }

    // MARK: Node-wide work, on shard 0

    public func announce(_ node: NodeInfo, ttl: Double) -> EventLoopFuture<Void> {
        self.shards[0].announce(node, ttl: ttl)
    }

    public func removeNode(id: String) -> EventLoopFuture<Void> {
        self.shards[0].removeNode(id: id)
    }

    public func nodes() -> EventLoopFuture<[NodeInfo]> {
        self.shards[0].nodes()
    }

    public func acquireUserConnection(user: String, connection: String, node: String, limit: Int) -> EventLoopFuture<Bool> {
        self.shards[0].acquireUserConnection(user: user, connection: connection, node: node, limit: limit)
    }

    public func releaseUserConnection(user: String, connection: String) -> EventLoopFuture<Void> {
        self.shards[0].releaseUserConnection(user: user, connection: connection)
    }

    public func sendControl(_ message: ControlMessage, to node: String?) -> EventLoopFuture<Void> {
        self.shards[0].sendControl(message, to: node)
    }
}
