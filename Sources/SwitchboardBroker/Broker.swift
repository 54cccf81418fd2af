public import NIOCore
public import SwitchboardCore

/// How nodes reach each other: ordered publication with history, subscriptions,
/// presence, the node registry and node-to-node control messages.
///
/// Two implementations share one contract and one conformance suite:
/// `MemoryBroker` inside one process and the Redis broker across processes.
/// Events for subscribed channels are delivered, in offset order per channel,
/// to the handler passed to `start(eventHandler:)`: a channel's events always on
/// `eventLoop(forChannel:)`, control messages on `eventLoop`.
public protocol Broker: AnyObject, Sendable {
    /// The event loop on which control messages (and, unless the broker is sharded, every event) are delivered.
    var eventLoop: any EventLoop { get }

    /// The event loop on which `channel`'s events are delivered and its calls complete: a sharded
    /// broker (the memory broker) owns each channel on one loop, so a hub shard on the same loop
    /// reaches it without a hop.
    func eventLoop(forChannel channel: String) -> any EventLoop

    /// Sets the receiver of events. Called once, before any subscription.
    func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void>

    /// Orders and stores a publication and delivers it to every subscribed node.
    /// The returned position is the publication's (offset 0 and empty epoch when history is off).
    func publish(_ request: PublishRequest) -> EventLoopFuture<PublishResult>

    /// Publishes as `publish` does, at once, when the channel's state lives on the calling loop
    /// (the memory broker's shard): the result instead of a future, so the hot path of a publication
    /// made on its channel's loop allocates no promise. nil when it cannot (another loop, a network
    /// broker): the caller then uses `publish`. The default is nil.
    func publishNow(_ request: PublishRequest) -> Result<PublishResult, any Error>?

    /// Delivers a join or leave to every node subscribed to `channel` (not stored).
    func publishPresenceEvent(_ event: PresenceEvent, channel: String) -> EventLoopFuture<Void>

    /// Starts delivery of `channel`'s events to this node. Completes once delivery is live.
    func subscribe(channel: String) -> EventLoopFuture<Void>

    /// Stops delivery of `channel`'s events to this node.
    func unsubscribe(channel: String) -> EventLoopFuture<Void>

    /// Publications after `since` (or the latest ones), with the channel's current position.
    func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult>

    /// Gives `channel` a new epoch if it is still in `epoch`: a node saw the broker reuse an offset
    /// in that epoch (it lost its newest publications but kept the channel, as a promoted replica
    /// or a restore from an older snapshot does), so positions in it must stop recovering.
    func renewEpoch(channel: String, ifStill epoch: String) -> EventLoopFuture<Void>

    /// Adds or refreshes clients' presence in `channel` for `ttl` seconds (one round trip for all of them).
    func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void>

    /// Removes clients' presence in `channel` (one round trip for all of them; absent ones are ignored).
    func removePresence(channel: String, clients: [String]) -> EventLoopFuture<Void>

    /// Clients present in `channel` (expired entries dropped).
    func presence(channel: String) -> EventLoopFuture<[ClientInfo]>

    /// Announces or refreshes a node in the registry for `ttl` seconds.
    func announce(_ node: NodeInfo, ttl: Double) -> EventLoopFuture<Void>

    /// Removes a node from the registry.
    func removeNode(id: String) -> EventLoopFuture<Void>

    /// All live nodes.
    func nodes() -> EventLoopFuture<[NodeInfo]>

    /// Takes a slot for `user`'s connection `connection` (unique in the cluster) held on `node`
    /// (`limits.connectionsPerUser`): true when the user held fewer than `limit` connections on all
    /// live nodes together (the connection is then counted, and `releaseUserConnection` must follow
    /// once it ends), false when the user holds `limit` already (nothing counted). Connections of
    /// nodes no longer in the registry (`announce`, `removeNode`, expiry) are dropped, so a dead
    /// node's connections stop counting once its registry entry is gone; `node`'s always count.
    /// Acquiring a connection counted already answers true and counts nothing more, so a repeat is
    /// harmless. `limit` below 1 admits without counting. A user longer than
    /// `BrokerLimits.maximumUserBytes` fails with `BrokerError.invalidRequest`.
    func acquireUserConnection(user: String, connection: String, node: String, limit: Int) -> EventLoopFuture<Bool>

    /// Stops counting `user`'s connection `connection`. Idempotent: releasing a connection that is
    /// not counted (never was, or released already) does nothing, so a release whose answer was
    /// lost may be sent again, and one may be sent for an acquire whose answer was lost.
    func releaseUserConnection(user: String, connection: String) -> EventLoopFuture<Void>

    /// Sends a control message to one node (`to`), or to every node when `to` is nil.
    func sendControl(_ message: ControlMessage, to node: String?) -> EventLoopFuture<Void>

    /// Releases connections and timers.
    func shutdown() -> EventLoopFuture<Void>

    /// Where the node counts the deliveries it queued between its loops, so that a network broker
    /// stops reading while they pile up (`DeliveryBacklog`). Nil (the default) for a broker that
    /// delivers on the caller's loops and reads from no network.
    var deliveryBacklog: DeliveryBacklog? { get }
}

extension Broker {
    public var deliveryBacklog: DeliveryBacklog? { nil }

    /// A broker that never loses publications it acknowledged (the memory broker) never reuses an
    /// offset: nothing to renew.
    public func renewEpoch(channel: String, ifStill epoch: String) -> EventLoopFuture<Void> {
        self.eventLoop.makeSucceededVoidFuture()
    }

    /// Only a broker with state on the caller's loop can publish without a future.
    public func publishNow(_ request: PublishRequest) -> Result<PublishResult, any Error>? {
        nil
    }

    /// Unsharded brokers deliver every channel's events on `eventLoop`.
    public func eventLoop(forChannel channel: String) -> any EventLoop {
        self.eventLoop
    }

    /// Adds or refreshes one client's presence in `channel` for `ttl` seconds.
    public func addPresence(channel: String, info: ClientInfo, ttl: Double) -> EventLoopFuture<Void> {
        self.addPresence(channel: channel, clients: [info], ttl: ttl)
    }
}

/// Something a broker delivers to a node.
public enum BrokerEvent: Sendable, Hashable {
    /// A publication in a subscribed channel; `epoch` names the history it belongs to (empty when none).
    case publication(channel: String, Publication, epoch: String)
    /// A join or leave in a subscribed channel.
    case presence(channel: String, PresenceEvent)
    /// A control message addressed to this node (or to all).
    case control(ControlMessage)
    /// Delivery may have missed events (for example after a broker reconnect); the node must resynchronise.
    case deliveryInterrupted
}

/// A join or a leave.
public enum PresenceEvent: Sendable, Hashable {
    case join(ClientInfo)
    case leave(ClientInfo)
}

/// A publish to the broker.
public struct PublishRequest: Sendable, Hashable {
    public var channel: String
    public var data: ByteBuffer
    public var info: ClientInfo?
    /// Publications kept; 0 = no history.
    public var historySize: Int
    /// Seconds a publication stays in history.
    public var historyTTL: Double
    /// When set, a second publish with the same key within `idempotencyWindow` returns the first result and publishes nothing.
    public var idempotencyKey: String?
    public var idempotencyWindow: Double
    /// When the node accepted the publication, nanoseconds since 1970 (carried to every node for latency metrics).
    public var time: UInt64

    public init(
        channel: String,
        data: ByteBuffer,
        info: ClientInfo? = nil,
        historySize: Int,
        historyTTL: Double,
        idempotencyKey: String? = nil,
        idempotencyWindow: Double = 300,
        time: UInt64 = 0
    ) {
        self.channel = channel
        self.data = data
        self.info = info
        self.historySize = historySize
        self.historyTTL = historyTTL
        self.idempotencyKey = idempotencyKey
        self.idempotencyWindow = idempotencyWindow
        self.time = time
    }
}

/// Where a publication landed.
public struct PublishResult: Sendable, Hashable {
    /// The publication's position; offset 0 when the channel keeps no history.
    public var position: StreamPosition
    /// True when this was a repeat of an idempotency key and nothing new was published.
    public var duplicate: Bool

    public init(position: StreamPosition, duplicate: Bool = false) {
        self.position = position
        self.duplicate = duplicate
    }
}

/// A history read.
public struct HistoryQuery: Sendable, Hashable {
    public var channel: String
    /// Only publications after this offset; the epoch is not checked by the broker.
    public var sinceOffset: UInt64?
    /// At most this many publications; 0 reads only the position.
    public var limit: Int
    /// Newest first.
    public var reverse: Bool
    /// At most about this many bytes of publications (nil: no bound): the read stops before the
    /// first publication that would take the running total of `bytes(ofData:)` past it, and says
    /// so (`HistoryResult.truncated`). A subscribe that recovers bounds its read by the room its
    /// reply has, so that a request naming many channels with large histories does not have them
    /// all read into memory (from Redis, copied) only to answer "not recovered".
    public var maximumBytes: Int?
    /// What each publication counts against `maximumBytes` beside its data: by default
    /// `envelopeBytes`, the least a recovery's reply takes per publication; a `history` answer,
    /// whose publications carry less, counts none (its own exact measure follows the read).
    public var envelopeBytesPerPublication = HistoryQuery.envelopeBytes

    public init(channel: String, sinceOffset: UInt64? = nil, limit: Int, reverse: Bool = false, maximumBytes: Int? = nil) {
        self.channel = channel
        self.sinceOffset = sinceOffset
        self.limit = limit
        self.reverse = reverse
        self.maximumBytes = maximumBytes
    }

    /// What a publication with `count` bytes of data counts against `maximumBytes`: its data and
    /// the least its envelope takes in a reply (a reply's own measure is never below it).
    public static func bytes(ofData count: Int) -> Int { count &+ Self.envelopeBytes }

    /// The envelope counted per publication by `bytes(ofData:)`.
    public static let envelopeBytes = 96

    /// How many of `publications` (oldest first) fit `maximumBytes`: all of them when unbounded.
    public func fittingCount(_ publications: [Publication]) -> Int {
        guard let maximum = self.maximumBytes else { return publications.count }
        var total = 0
        for (index, publication) in publications.enumerated() {
            total &+= publication.data.readableBytes &+ self.envelopeBytesPerPublication
            if total > maximum { return index }
        }
        return publications.count
    }
}

/// The result of a history read.
public struct HistoryResult: Sendable, Hashable {
    public var publications: [Publication]
    /// The channel's current position (offset of the newest publication and the epoch).
    public var position: StreamPosition
    /// The read stopped at the query's `maximumBytes`: `publications` is a prefix of what it asked
    /// for, and more follow it (up to `position`).
    public var truncated: Bool

    public init(publications: [Publication], position: StreamPosition, truncated: Bool = false) {
        self.publications = publications
        self.position = position
        self.truncated = truncated
    }
}

/// A node as the registry knows it.
public struct NodeInfo: Sendable, Hashable {
    public var id: String
    public var name: String
    public var address: String
    public var connections: Int
    public var subscriptions: Int
    public var channels: Int
    public var uptime: Double
    public var draining: Bool
    /// The node's share of new connections against other nodes (`serve --weight`, 1-100), for a
    /// balancer that reads the registry.
    public var weight: Int
    /// Most connections the node takes (`--max-connections`, or what its open-files limit allows).
    public var maxConnections: Int
    /// When the broker wrote this entry (seconds since 1970, the broker host's clock); nil when read
    /// from a broker that does not say.
    public var announcedAt: Double?
    /// How busy the node's usable cores were over the last announce interval, 0-1 (process CPU
    /// time ÷ wall time ÷ cores); nil when not measured (the first announce, no `/proc`).
    public var cpu: Double?
    /// How late a task queued on the node's most loaded event loop ran, in seconds, at the last
    /// probe: a node whose loops fall behind answers everything late, whatever its CPU figure.
    public var loopLag: Double?

    public init(
        id: String,
        name: String,
        address: String,
        connections: Int = 0,
        subscriptions: Int = 0,
        channels: Int = 0,
        uptime: Double = 0,
        draining: Bool = false,
        weight: Int = 1,
        maxConnections: Int = 0,
        announcedAt: Double? = nil,
        cpu: Double? = nil,
        loopLag: Double? = nil
    ) {
        self.id = id
        self.name = name
        self.address = address
        self.connections = connections
        self.subscriptions = subscriptions
        self.channels = channels
        self.uptime = uptime
        self.draining = draining
        self.weight = weight
        self.maxConnections = maxConnections
        self.announcedAt = announcedAt
        self.cpu = cpu
        self.loopLag = loopLag
    }
}

/// A command from one node to others, for clients that may be anywhere.
public enum ControlMessage: Sendable, Hashable {
    /// Disconnect a client (by id) or every connection of a user.
    case disconnect(client: String?, user: String?, code: UInt16, reason: String)
    /// Unsubscribe every connection of a user from a channel.
    case unsubscribe(user: String, channel: String)
    /// Commands for an SSE session held by the receiving node (they were POSTed to another node);
    /// the outcome goes back to `replyTo` as `sessionCommandsResult` with the same `correlation`.
    case sessionCommands(session: String, commands: String, replyTo: String, correlation: UInt64)
    /// What became of forwarded `sessionCommands`: `status` is an HTTP status (202 accepted, 400, 404).
    case sessionCommandsResult(correlation: UInt64, status: Int, accepted: Int, message: String)
}
