import Foundation
public import Logging
import NIOConcurrencyHelpers
public import NIOCore
public import RedisClient
import RESP
public import SwitchboardBroker
public import SwitchboardCore

/// The broker across processes: Redis (DESIGN.md "Redis data model").
///
/// Publish is one Lua script per channel (epoch, offset, a stream trimmed to about
/// its size, expiries, PUBLISH, idempotency); history reads the stream's newest
/// `size` offsets; presence is a
/// hash plus a sorted set of expiries; the registry a sorted set plus a key
/// per node; control messages a pub/sub channel per node. Every channel's keys
/// share a hash tag, so the same scripts run on Redis Cluster.
///
/// Deliveries come from a dedicated subscriber connection on `eventLoop`. A
/// probe published to this node's own channel every `probeInterval` must come
/// back through it; when it does not, the subscriber connection is rebuilt and
/// the node told (`.deliveryInterrupted`) so it can refill from history.
///
/// On a Redis Cluster (`redis+cluster://`) commands go to the master of their key's slot
/// (`RedisClusterClient`), and publications are shard messages (`SPUBLISH` to `sb:{channel}:c`,
/// in the channel's slot) received through a subscription on that master (`RedisClusterSubscriber`):
/// a publication touches one master, whatever the size of the cluster. Control messages and the
/// probe of the classic subscriber stay classic `PUBLISH`, which the cluster carries to every node;
/// each master's shard subscriber connection is probed on a shard channel of that master.
///
/// About 600 lines, on purpose: each `Broker` requirement sits next to the key
/// names and the encodings it uses, in the protocol's order, so the data model
/// reads in one place; the Lua is in `RedisBrokerScripts.swift`.
public final class RedisBroker: Broker, @unchecked Sendable {
    // @unchecked: the `var`s are touched only on `eventLoop` (`subscriber` is set once in `init`, before sharing).
    public let eventLoop: any EventLoop
    public let nodeID: String
    /// Which of a node's brokers this is (`ShardedRedisBroker` runs one per event loop): shard 0
    /// receives the control messages; each shard probes its own subscriber on a channel of its own.
    public let shard: Int
    private let client: any RedisCommandSender
    /// Whether Redis is a cluster (PUBLISH answers count only the subscribers of the node asked).
    private let isCluster: Bool
    private var subscriber: RedisSubscriber!
    /// On a Redis Cluster: the channels' subscriptions, each on the master of its slot (`SSUBSCRIBE`);
    /// `subscriber` then carries only the node's control and probe channels.
    private var shardSubscriber: RedisClusterSubscriber?
    private let logger: Logger
    private let metaTTL: Double
    private let probeInterval: TimeAmount
    /// Caps on tables keyed by client input.
    public let limits: BrokerLimits
    private static let parser = JSONParser(maximumDepth: 32, maximumValues: 100_000)

    // Confined to `eventLoop`.
    private var handler: (@Sendable (BrokerEvent) -> Void)?
    private var probeTask: RepeatedTask?
    private var probeSent: UInt64 = 0
    private var probeReceived: UInt64 = 0
    private var probeSentAt: NIODeadline?
    private var shutDown = false

    /// Deliveries the node has queued between its loops: the subscriber reads nothing while it is over its limit.
    public let deliveryBacklog: DeliveryBacklog?

    public init(
        configuration: RedisConfiguration,
        nodeID: String,
        eventLoop: any EventLoop,
        logger: Logger,
        metaTTL: Double = 86_400,
        probeInterval: TimeAmount = .seconds(2),
        limits: BrokerLimits = BrokerLimits(),
        shard: Int = 0,
        deliveryBacklog: DeliveryBacklog = DeliveryBacklog()
    ) {
        self.deliveryBacklog = deliveryBacklog
        let readHold = RedisReadHold(shouldHold: { deliveryBacklog.isOverLimit }, mayResume: { deliveryBacklog.isBelowResumeMark })
        self.eventLoop = eventLoop
        self.nodeID = nodeID
        self.shard = shard
        self.logger = logger
        self.metaTTL = metaTTL.isFinite ? min(max(metaTTL, 1), Double(Self.maximumSeconds)) : 86_400
        self.limits = limits
        self.probeInterval = probeInterval
        self.isCluster = configuration.isCluster
        self.subscriber = nil
        self.shardSubscriber = nil
        if configuration.isCluster {
            let cluster = RedisClusterClient(configuration: configuration, eventLoop: eventLoop, logger: logger)
            self.client = cluster
            self.shardSubscriber = RedisClusterSubscriber(
                client: cluster,
                logger: logger,
                onMessage: { [unowned self] channel, payload in self.received(channel: channel, payload: payload) },
                onResubscribed: { [unowned self] in self.handler?(.deliveryInterrupted) },
                readHold: readHold
            )
        } else {
            self.client = RedisClient(configuration: configuration, eventLoop: eventLoop, logger: logger)
        }
        self.subscriber = RedisSubscriber(
            configuration: configuration,
            eventLoop: eventLoop,
            logger: logger,
            firstNode: shard,
            onMessage: { [unowned self] channel, payload in self.received(channel: channel, payload: payload) },
            onResubscribed: { [unowned self] in self.handler?(.deliveryInterrupted) },
            readHold: readHold
        )
    }

    // MARK: Keys

    static let streamKey = RedisChannelKey(prefix: "sb:{", suffix: "}:s")
    static let metaKey = RedisChannelKey(prefix: "sb:{", suffix: "}:m")
    /// How many lives (births after deletion) a channel had: kept past its meta, so a channel
    /// whose keys were deleted is born again in a new epoch.
    static let livesKey = RedisChannelKey(prefix: "sb:{", suffix: "}:g")
    static let presenceHashKey = RedisChannelKey(prefix: "sb:{", suffix: "}:p")
    static let presenceSetKey = RedisChannelKey(prefix: "sb:{", suffix: "}:z")
    static func idempotencyKey(_ channel: String, _ key: String) -> String {
        "sb:{\(RedisChannelKey.tagged(channel, after: "sb:{"))}:i:\(key)"
    }
    /// Every key a channel can have, for tests of the Cluster rule (all in one slot).
    @_spi(Harness) public static func keys(ofChannel channel: String) -> [String] {
        [streamKey, metaKey, livesKey, presenceHashKey, presenceSetKey].map { $0(channel) } + [idempotencyKey(channel, "k")]
    }
    static let pubsubChannel = RedisChannelKey(prefix: "sb:c:", suffix: "")
    static let pubsubPrefix = "\(pubsubChannel.prefix)"
    /// A channel's shard channel on a Redis Cluster (`SPUBLISH`, `SSUBSCRIBE`): in its keys' slot.
    static let shardChannel = RedisChannelKey(prefix: "sb:{", suffix: "}:c")

    /// The channel a message's pub/sub channel belongs to, nil for any other.
    static func channel(ofPubSubName name: String) -> String? {
        if name.hasPrefix(Self.pubsubPrefix) { return String(name.dropFirst(Self.pubsubPrefix.count)) }
        guard name.hasPrefix("sb:{"), name.hasSuffix("}:c"), name.utf8.count >= 7 else { return nil }
        var channel = name.dropFirst(4).dropLast(3)
        if channel.first == "\u{1}" { channel = channel.dropFirst() }
        return String(channel)
    }
    static let registryKey = "sb:nodes"
    static func nodeKey(_ id: String) -> String { "sb:node:\(id)" }
    /// A user's connections (`acquireUserConnection`: connection id → node id); the user is the
    /// hash tag, so the one key a script touches has one Cluster slot.
    static func userConnectionsKey(_ user: String) -> String { "sb:u:{\(user)}" }
    /// Seconds a user's connection hash outlives the user's last accepted connection anywhere
    /// (it is refreshed by every acquire, and deleted when its last field goes).
    @_spi(Harness) public static let userConnectionsTTL: Int64 = 86_400
    static let controlAll = "sb:ctl"
    static func controlChannel(_ node: String) -> String { "sb:ctl:\(node)" }
    var probeChannel: String { self.shard == 0 ? "sb:probe:\(self.nodeID)" : "sb:probe:\(self.nodeID):\(self.shard)" }

    static func now() -> Double { Date().timeIntervalSince1970 }

    /// Ten years: the longest TTL sent to Redis.
    @_spi(Harness) public static let maximumSeconds: Int64 = 10 * 365 * 86_400

    /// A duration in whole units (rounded up) within `1...maximum`, whatever the input (NaN, infinite,
    /// negative, huge): a TTL from configuration or a client never traps and never reaches Redis out of range.
    @_spi(Harness) public static func whole(_ value: Double, maximum: Int64 = RedisBroker.maximumSeconds) -> Int64 {
        guard value.isFinite else { return value > 0 ? maximum : 1 }
        let rounded = value.rounded(.up)
        if rounded < 1 { return 1 }
        if rounded >= Double(maximum) { return maximum }
        return Int64(rounded)
    }

    // MARK: Lifecycle

    public func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            self.handler = eventHandler
        }.flatMap {
            let channels = self.shard == 0 ? [Self.controlAll, Self.controlChannel(self.nodeID), self.probeChannel] : [self.probeChannel]
            return EventLoopFuture.andAllSucceed(channels.map { self.subscriber.subscribe($0) }, on: self.eventLoop)
        }.map {
            self.probeTask = self.eventLoop.scheduleRepeatedTask(initialDelay: self.probeInterval, delay: self.probeInterval) { _ in
                self.probe()
            }
            // Each master's shard subscriber connection has a probe of its own.
            self.shardSubscriber?.startProbing(prefix: "\(self.probeChannel):shard", every: self.probeInterval)
        }
    }

    public func shutdown() -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            self.shutDown = true
            self.probeTask?.cancel()
            self.probeTask = nil
            self.handler = nil
        }.flatMap {
            let shards = self.shardSubscriber?.close() ?? self.eventLoop.makeSucceededVoidFuture()
            return self.subscriber.close().and(self.client.close()).and(shards).map { _ in }
        }
    }

    /// Publishes a probe through Redis; if the previous one never came back through the subscriber, rebuild it.
    private func probe() {
        // While the node is behind, its subscriber reads nothing on purpose: a probe sent before the
        // last hold may be waiting behind the held messages, so its time counts from that hold (a
        // reconnect would only add a refill).
        if let sentAt = self.probeSentAt, let held = self.subscriber.lastHeldRead, held > sentAt {
            self.probeSentAt = held
        }
        if let sentAt = self.probeSentAt, self.probeReceived < self.probeSent,
            NIODeadline.now() - sentAt >= self.probeInterval
        {
            self.logger.warning("redis subscriber delivered no probe; reconnecting it")
            self.probeSentAt = nil
            self.subscriber.reconnect()
            return
        }
        self.probeSent += 1
        let sequence = self.probeSent
        self.probeSentAt = .now()
        self.client.send("PUBLISH", .string(self.probeChannel), .integer(Int64(sequence))).whenComplete { result in
            if case .success(let receivers) = result, receivers.int64 == 0, !self.isCluster {
                // Redis has no subscription of ours at all.
                self.logger.warning("redis has no subscriber for this node; reconnecting it")
                self.subscriber.reconnect()
            } else if case .failure = result {
                // Redis is unreachable: the subscriber notices on its own; do not count this probe.
                self.probeSentAt = nil
                self.probeReceived = self.probeSent
            }
        }
    }

    // MARK: Deliveries

    private func received(channel: String, payload: ByteBuffer) {
        guard let handler = self.handler else { return }
        if let name = Self.channel(ofPubSubName: channel) {
            guard let event = Self.decodeChannelMessage(name, payload) else {
                self.logger.error("undecodable message", metadata: ["channel": "\(name)"])
                return
            }
            handler(event)
        } else if channel == self.probeChannel {
            if let sequence = UInt64(String(buffer: payload)) { self.probeReceived = max(self.probeReceived, sequence) }
        } else if channel == Self.controlAll || channel == Self.controlChannel(self.nodeID) {
            if let message = Self.decodeControl(payload) { handler(.control(message)) }
        }
    }

    static func decodeChannelMessage(_ channel: String, _ payload: ByteBuffer) -> BrokerEvent? {
        var payload = payload
        guard let kind = payload.readInteger(as: UInt8.self) else { return nil }
        switch kind {
        case UInt8(ascii: "p"):
            // Offsets above Int64.max are refused like any malformed message: the sequencer adds to them.
            guard let offset = readField(&payload).flatMap({ UInt64($0) }), offset <= StreamPosition.maximumOffset,
                let epoch = readField(&payload),
                let time = readField(&payload).flatMap({ UInt64($0) }),
                let infoLength = readField(&payload).flatMap({ Int($0) }), infoLength >= 0,
                let infoBytes = payload.readSlice(length: infoLength)
            else { return nil }
            let info = infoLength == 0 ? nil : decodeClientInfo(infoBytes)
            return .publication(channel: channel, Publication(offset: offset, data: payload, info: info, time: time), epoch: epoch)
        case UInt8(ascii: "j"), UInt8(ascii: "l"):
            guard let info = decodeClientInfo(payload) else { return nil }
            return .presence(channel: channel, kind == UInt8(ascii: "j") ? .join(info) : .leave(info))
        default:
            return nil
        }
    }

    /// Reads up to the next space.
    private static func readField(_ buffer: inout ByteBuffer) -> String? {
        guard let space = buffer.readableBytesView.firstIndex(of: UInt8(ascii: " ")) else { return nil }
        let length = space - buffer.readerIndex
        let text = buffer.readString(length: length)
        buffer.moveReaderIndex(forwardBy: 1)
        return text
    }

    /// A client's info as stored: with its server-side `meta` for presence, without for publications.
    static func encodeClientInfo(_ info: ClientInfo, includingMeta: Bool = false) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeClientInfo(info, includingMeta: includingMeta)
        return buffer
    }

    static func decodeClientInfo(_ bytes: ByteBuffer) -> ClientInfo? {
        ClientInfo.decode(bytes, parser: Self.parser)
    }

    // MARK: Publish and history

    public func publish(_ request: PublishRequest) -> EventLoopFuture<PublishResult> {
        if let key = request.idempotencyKey, key.utf8.count > self.limits.maximumIdempotencyKeyBytes {
            return self.eventLoop.makeFailedFuture(
                BrokerError(.invalidRequest, "idempotency key longer than \(self.limits.maximumIdempotencyKeyBytes) bytes"))
        }
        let keepsHistory = request.historySize > 0 && request.historyTTL > 0
        let info = request.info.map { Self.encodeClientInfo($0) } ?? ByteBuffer()
        // Written as they are added: no array of arguments, no key made a `String` first.
        var command = RESPArgumentList(capacity: 192 + request.data.readableBytes + info.readableBytes)
        command.append(.integer(request.idempotencyKey == nil ? 3 : 4))
        command.append(Self.streamKey, request.channel)
        command.append(Self.metaKey, request.channel)
        command.append(Self.livesKey, request.channel)
        if let key = request.idempotencyKey { command.append(.string(Self.idempotencyKey(request.channel, key))) }
        command.append(self.isCluster ? Self.shardChannel : Self.pubsubChannel, request.channel)
        command.append(.integer(Int64(keepsHistory ? request.historySize : 0)))
        command.append(.integer(Self.whole(request.historyTTL)))
        command.append(.integer(Self.whole(max(self.metaTTL, request.historyTTL))))
        command.append(.integer(Self.whole(self.metaTTL)))
        command.append(.integer(Self.whole(request.idempotencyWindow)))
        command.append(.bytes(request.data))
        command.append(.bytes(info))
        command.append(.integer(Int64(clamping: request.time)))
        if self.isCluster { command.append("SPUBLISH") }
        // One promise and one callback per publish (no future chain): every publication is one.
        let promise = self.eventLoop.makePromise(of: PublishResult.self)
        self.client.evaluate(RedisBrokerScripts.publish, command, slot: { RedisHashSlot.slot(of: Self.streamKey(request.channel)) }) { reply in
            switch reply {
            case .success(let token):
                guard let reply = token.array, reply.count == 3, let offset = reply[0].int64.flatMap({ UInt64(exactly: $0) }),
                    let epoch = reply[1].string, let duplicate = reply[2].int64
                else { return promise.fail(RedisError(.protocolError, "unexpected publish reply")) }
                promise.succeed(PublishResult(position: StreamPosition(offset: offset, epoch: epoch), duplicate: duplicate == 1))
            case .failure(let error):
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    public func publishPresenceEvent(_ event: PresenceEvent, channel: String) -> EventLoopFuture<Void> {
        var payload = ByteBuffer()
        switch event {
        case .join(let info):
            payload.writeInteger(UInt8(ascii: "j"))
            payload.writeClientInfo(info)
        case .leave(let info):
            payload.writeInteger(UInt8(ascii: "l"))
            payload.writeClientInfo(info)
        }
        if self.isCluster {
            return self.client.send("SPUBLISH", .string(Self.shardChannel(channel)), .bytes(payload)).map { _ in }
        }
        return self.client.send("PUBLISH", .string(Self.pubsubChannel(channel)), .bytes(payload)).map { _ in }
    }

    public func subscribe(channel: String) -> EventLoopFuture<Void> {
        if let shards = self.shardSubscriber { return shards.subscribe(Self.shardChannel(channel)) }
        return self.subscriber.subscribe(Self.pubsubChannel(channel))
    }

    public func unsubscribe(channel: String) -> EventLoopFuture<Void> {
        if let shards = self.shardSubscriber { return shards.unsubscribe(Self.shardChannel(channel)) }
        return self.subscriber.unsubscribe(Self.pubsubChannel(channel))
    }

    /// Reads create no key: an unknown channel reports offset 0 and the epoch its first publication
    /// will get. An offset past what Redis can hold (offsets are signed 64-bit there) reads nothing.
    public func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        let (first, limit) = Self.streamRange(sinceOffset: query.sinceOffset, limit: query.limit)
        let arguments: [RESPArgument] = [
            .integer(Self.whole(self.metaTTL)),
            .string(first),
            .integer(limit),
            .string(query.reverse ? "1" : "0"),
            .integer(query.maximumBytes.map { Int64(clamping: $0) } ?? -1),
            .integer(Int64(clamping: query.envelopeBytesPerPublication)),
        ]
        let keys = [Self.streamKey(query.channel), Self.metaKey(query.channel), Self.livesKey(query.channel)]
        return self.client.evaluate(RedisBrokerScripts.history, keys: keys, arguments: arguments).flatMapThrowing { token in
            guard let reply = token.array, reply.count == 3 || reply.count == 4, let epoch = reply[0].string,
                let top = reply[1].int64.flatMap({ UInt64(exactly: $0) }),
                let entries = reply[2].array
            else { throw RedisError(.protocolError, "unexpected history reply") }
            var publications: [Publication] = []
            publications.reserveCapacity(entries.count)
            for entry in entries {
                guard let parts = entry.array, parts.count == 2, let id = parts[0].string,
                    let offset = Self.offset(ofStreamID: id),
                    let fields = parts[1].array
                else { throw RedisError(.protocolError, "unexpected stream entry") }
                var data = ByteBuffer()
                var info: ClientInfo?
                var i = 0
                while i + 1 < fields.count {
                    switch fields[i].string {
                    case "d": data = fields[i + 1].bytes ?? ByteBuffer()
                    case "i":
                        if let bytes = fields[i + 1].bytes, bytes.readableBytes > 0 { info = Self.decodeClientInfo(bytes) }
                    default: break
                    }
                    i += 2
                }
                publications.append(Publication(offset: offset, data: data, info: info))
            }
            return HistoryResult(publications: publications, position: StreamPosition(offset: top, epoch: epoch), truncated: reply.count == 4)
        }
    }

    public func renewEpoch(channel: String, ifStill epoch: String) -> EventLoopFuture<Void> {
        self.client.evaluate(RedisBrokerScripts.renewEpoch, keys: [Self.metaKey(channel)], arguments: [.string(epoch)]).map { _ in }
    }

    /// The stream range a history read asks Redis for: the first entry id (`-` for the start) and
    /// the count (-1: no limit). Offsets are signed 64-bit in Redis: after `Int64.max` nothing can
    /// follow, so the count is 0 (a client's offset never reaches `+ 1` there). Pure; the fuzz target
    /// `FuzzHTTPBodies` reaches it through `@_spi(Harness)`.
    @_spi(Harness) public static func streamRange(sinceOffset: UInt64?, limit: Int) -> (first: String, count: Int64) {
        var first = "-"
        var count = limit < 0 ? -1 : Int64(limit)
        if let since = sinceOffset {
            if since < UInt64(Int64.max) {
                first = "\(since + 1)-0"
            } else {
                count = 0  // nothing can follow it
            }
        }
        return (first, count)
    }

    /// The offset in a stream entry id (`<offset>-0`), nil when it is not one or is above
    /// `StreamPosition.maximumOffset` (a stream written by something else than a node).
    @_spi(Harness) public static func offset(ofStreamID id: String) -> UInt64? {
        id.split(separator: "-").first.flatMap { UInt64($0) }.flatMap { $0 <= StreamPosition.maximumOffset ? $0 : nil }
    }

    // MARK: Presence

    /// At most `limits.maximumPresencePerChannel` entries per channel: past it, clients already
    /// present are refreshed and new ones are not listed.
    public func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        guard !clients.isEmpty, ttl > 0 else { return self.eventLoop.makeSucceededVoidFuture() }
        let keys = [Self.presenceHashKey(channel), Self.presenceSetKey(channel)]
        let now = Self.now()
        var arguments: [RESPArgument] = [
            .double(now + ttl), .integer(Self.whole(ttl * 2)), .double(now), .integer(Int64(max(self.limits.maximumPresencePerChannel, 1))),
        ]
        arguments.reserveCapacity(4 + clients.count * 2)
        for info in clients {
            arguments.append(.string(info.client))
            arguments.append(.bytes(Self.encodeClientInfo(info, includingMeta: true)))
        }
        return self.client.evaluate(RedisBrokerScripts.addPresence, keys: keys, arguments: arguments).map { _ in }
    }

    public func removePresence(channel: String, clients: [String]) -> EventLoopFuture<Void> {
        guard !clients.isEmpty else { return self.eventLoop.makeSucceededVoidFuture() }
        let names = clients.map { RESPArgument.string($0) }
        return self.client.send([.string("HDEL"), .string(Self.presenceHashKey(channel))] + names)
            .and(self.client.send([.string("ZREM"), .string(Self.presenceSetKey(channel))] + names))
            .map { _ in }
    }

    public func presence(channel: String) -> EventLoopFuture<[ClientInfo]> {
        let keys = [Self.presenceHashKey(channel), Self.presenceSetKey(channel)]
        return self.client.evaluate(RedisBrokerScripts.presence, keys: keys, arguments: [.double(Self.now())]).map { token in
            var clients: [ClientInfo] = []
            if let flat = token.array {
                var i = 1
                while i < flat.count {
                    if let bytes = flat[i].bytes, let info = Self.decodeClientInfo(bytes) { clients.append(info) }
                    i += 2
                }
            } else if case .map(let map) = token.value {
                for entry in map {
                    if let bytes = entry.value.bytes, let info = Self.decodeClientInfo(bytes) { clients.append(info) }
                }
            }
            return clients.sorted { $0.client < $1.client }
        }
    }

    // MARK: Registry and control

    public func announce(_ node: NodeInfo, ttl: Double) -> EventLoopFuture<Void> {
        var json = ByteBuffer()
        json.writeJSON(Self.nodeJSON(node, at: Self.now()))
        return self.client.send("ZADD", .string(Self.registryKey), .double(Self.now() + ttl), .string(node.id))
            .and(self.client.send("SET", .string(Self.nodeKey(node.id)), .bytes(json), "PX", .integer(Self.whole(ttl * 1000, maximum: Self.maximumSeconds * 1000))))
            .map { _ in }
    }

    public func removeNode(id: String) -> EventLoopFuture<Void> {
        self.client.send("ZREM", .string(Self.registryKey), .string(id))
            .and(self.client.send("DEL", .string(Self.nodeKey(id))))
            .map { _ in }
    }

    /// Most registry entries read: a fleet larger than this is not a Switchboard deployment.
    public static let maximumRegistryNodes = 1000

    public func nodes() -> EventLoopFuture<[NodeInfo]> {
        self.client.send("ZREMRANGEBYSCORE", .string(Self.registryKey), "-inf", .double(Self.now())).flatMap { _ in
            // At most the first `maximumRegistryNodes`: a registry that someone filled with entries
            // costs one GET each, on the connection publications use too.
            self.client.send("ZRANGE", .string(Self.registryKey), "0", .string(String(Self.maximumRegistryNodes - 1)))
        }.flatMap { token in
            let ids = (token.array ?? []).compactMap(\.string)
            guard !ids.isEmpty else { return self.eventLoop.makeSucceededFuture([]) }
            return self.client.values(of: ids.map(Self.nodeKey)).map { values in
                values.compactMap { value -> NodeInfo? in
                    guard let bytes = value, let json = try? Self.parser.parse(bytes.readableBytesView) else { return nil }
                    return Self.node(fromJSON: json)
                }.sorted { $0.id < $1.id }
            }
        }
    }

    // MARK: Connections per user

    /// Runs one script on the user's hash (one key: Cluster-safe) with the live node ids.
    ///
    /// The ids come from a copy of the registry at most `liveNodesMaximumAge` old: then an
    /// admission is one round trip. The copy is trusted only to admit (a node it still lists but
    /// the registry dropped only makes the count higher); when the script refuses, or finds a
    /// connection of a node the copy does not list (one that joined since), it changes nothing,
    /// and the acquire reads the registry afresh and runs again, dropping the connections of nodes
    /// the fresh read does not list. So a refusal always rests on a fresh read, and a node that
    /// stops announcing stops counting when it leaves the registry (`ttl` seconds later).
    public func acquireUserConnection(user: String, connection: String, node: String, limit: Int) -> EventLoopFuture<Bool> {
        guard user.utf8.count <= self.limits.maximumUserBytes else {
            return self.eventLoop.makeFailedFuture(BrokerError(.invalidRequest, "user longer than \(self.limits.maximumUserBytes) bytes"))
        }
        guard limit > 0 else { return self.eventLoop.makeSucceededFuture(true) }
        let now = NIODeadline.now()
        let cached = self.liveNodes.withLockedValue { copy -> [String]? in
            guard let at = copy.readAt, now - at < Self.liveNodesMaximumAge else { return nil }
            return copy.ids
        }
        let fresh: @Sendable () -> EventLoopFuture<Bool?> = {
            self.readLiveNodes().flatMap { live in
                self.runAcquire(user: user, connection: connection, node: node, limit: limit, live: live, authoritative: true)
            }
        }
        guard let cached else { return fresh().map { $0 ?? false } }
        return self.runAcquire(user: user, connection: connection, node: node, limit: limit, live: cached, authoritative: false)
            .flatMap { answer in
                if let answer { return self.eventLoop.makeSucceededFuture(answer) }
                return fresh().map { $0 ?? false }
            }
    }

    /// The live node ids, read from the registry now (and kept as the copy `acquireUserConnection` uses).
    private func readLiveNodes() -> EventLoopFuture<[String]> {
        let readAt = NIODeadline.now()
        return self.client.send("ZRANGEBYSCORE", .string(Self.registryKey), .double(Self.now()), "+inf").map { token in
            let ids = (token.array ?? []).compactMap(\.string)
            self.liveNodes.withLockedValue { $0 = LiveNodes(ids: ids, readAt: readAt) }
            return ids
        }
    }

    /// One run of the acquire script: the answer, or nil when `live` is a copy (not `authoritative`)
    /// and the script refused or found connections of nodes the copy does not list (nothing changed).
    private func runAcquire(
        user: String, connection: String, node: String, limit: Int, live: [String], authoritative: Bool
    ) -> EventLoopFuture<Bool?> {
        var arguments: [RESPArgument] = [
            .integer(Int64(limit)), .string(connection), .string(node), .integer(Self.userConnectionsTTL), .string(authoritative ? "1" : "0"),
        ]
        arguments.reserveCapacity(5 + live.count)
        for id in live where id != node { arguments.append(.string(id)) }
        return self.client.evaluate(RedisBrokerScripts.acquireUserConnection, keys: [Self.userConnectionsKey(user)], arguments: arguments)
            .flatMapThrowing { token in
                guard let answer = token.int64 else { throw RedisError(.protocolError, "unexpected acquire reply") }
                switch answer {
                case 1: return true
                case 0, -1: return authoritative ? false : nil
                default: throw RedisError(.protocolError, "unexpected acquire reply")
                }
            }
    }

    /// A copy of the registry's live node ids and when it was read.
    private struct LiveNodes {
        var ids: [String] = []
        var readAt: NIODeadline?
    }
    private let liveNodes = NIOLockedValueBox(LiveNodes())
    /// How long a copy of the live node ids serves `acquireUserConnection` (the registry changes
    /// when nodes come and go; a stale copy costs a second round trip, never a wrong count).
    static let liveNodesMaximumAge: TimeAmount = .seconds(2)

    /// One `HDEL` (the hash goes with its last field): idempotent.
    public func releaseUserConnection(user: String, connection: String) -> EventLoopFuture<Void> {
        guard user.utf8.count <= self.limits.maximumUserBytes else { return self.eventLoop.makeSucceededVoidFuture() }
        return self.client.send("HDEL", .string(Self.userConnectionsKey(user)), .string(connection)).map { _ in }
    }

    public func sendControl(_ message: ControlMessage, to node: String?) -> EventLoopFuture<Void> {
        var json = ByteBuffer()
        json.writeJSON(Self.controlJSON(message))
        let channel = node.map(Self.controlChannel) ?? Self.controlAll
        return self.client.send("PUBLISH", .string(channel), .bytes(json)).map { _ in }
    }

    // MARK: Encodings

    /// A registry entry; `at` is when it is written (`sb:node:<id>` is read by `switchboard balance`
    /// too: docs/balancer.md names these fields).
    static func nodeJSON(_ node: NodeInfo, at: Double) -> JSONValue {
        var members: [(key: String, value: JSONValue)] = [
            ("id", .string(node.id)), ("name", .string(node.name)), ("address", .string(node.address)),
            ("connections", .integer(node.connections)), ("subscriptions", .integer(node.subscriptions)),
            ("channels", .integer(node.channels)), ("uptime", .number(String(node.uptime))), ("draining", .bool(node.draining)),
            ("weight", .integer(node.weight)), ("maxConnections", .integer(node.maxConnections)), ("at", .number(String(at))),
        ]
        if let cpu = node.cpu, cpu.isFinite { members.append(("cpu", .number(String(cpu)))) }
        if let lag = node.loopLag, lag.isFinite { members.append(("lag", .number(String(lag)))) }
        return .object(JSONObject(members))
    }

    /// A registry entry. Whatever can write to Redis can write one, so every number is clamped to
    /// a sane range here: nodes add counts up and turn times into integers.
    static func node(fromJSON json: JSONValue) -> NodeInfo? {
        guard let id = json["id"]?.stringValue else { return nil }
        func count(_ key: String) -> Int { json[key]?.intValue.map { min(max($0, 0), 1_000_000_000) } ?? 0 }
        func seconds(_ key: String) -> Double? { json[key]?.doubleValue.flatMap { $0.isFinite ? min(max($0, 0), 1e11) : nil } }
        return NodeInfo(
            id: id,
            name: json["name"]?.stringValue ?? id,
            address: json["address"]?.stringValue ?? "",
            connections: count("connections"),
            subscriptions: count("subscriptions"),
            channels: count("channels"),
            uptime: seconds("uptime") ?? 0,
            draining: json["draining"]?.boolValue ?? false,
            weight: json["weight"]?.intValue.map { min(max($0, 1), 100) } ?? 1,
            maxConnections: count("maxConnections"),
            announcedAt: seconds("at"),
            cpu: json["cpu"]?.doubleValue.flatMap { $0.isFinite ? min(1, max(0, $0)) : nil },
            loopLag: json["lag"]?.doubleValue.flatMap { $0.isFinite ? min(3600, max(0, $0)) : nil }
        )
    }

    static func controlJSON(_ message: ControlMessage) -> JSONValue {
        switch message {
        case .disconnect(let client, let user, let code, let reason):
            var members: [(key: String, value: JSONValue)] = [("t", .string("disconnect")), ("code", .integer(code)), ("reason", .string(reason))]
            if let client { members.append(("client", .string(client))) }
            if let user { members.append(("user", .string(user))) }
            return .object(JSONObject(members))
        case .unsubscribe(let user, let channel):
            return .object(JSONObject([("t", .string("unsubscribe")), ("user", .string(user)), ("channel", .string(channel))]))
        case .sessionCommands(let session, let commands, let replyTo, let correlation):
            return .object(JSONObject([
                ("t", .string("cmd")), ("session", .string(session)), ("commands", .string(commands)),
                ("replyTo", .string(replyTo)), ("corr", .integer(Int(truncatingIfNeeded: correlation))),
            ]))
        case .sessionCommandsResult(let correlation, let status, let accepted, let message):
            return .object(JSONObject([
                ("t", .string("cmdResult")), ("corr", .integer(Int(truncatingIfNeeded: correlation))),
                ("status", .integer(status)), ("accepted", .integer(accepted)), ("message", .string(message)),
            ]))
        }
    }

    static func decodeControl(_ payload: ByteBuffer) -> ControlMessage? {
        guard let json = try? Self.parser.parse(payload.readableBytesView) else { return nil }
        switch json["t"]?.stringValue {
        case "disconnect":
            guard let code = json["code"]?.intValue, let c = UInt16(exactly: code) else { return nil }
            return .disconnect(client: json["client"]?.stringValue, user: json["user"]?.stringValue, code: c, reason: json["reason"]?.stringValue ?? "")
        case "unsubscribe":
            guard let user = json["user"]?.stringValue, let channel = json["channel"]?.stringValue else { return nil }
            return .unsubscribe(user: user, channel: channel)
        case "cmd":
            guard let session = json["session"]?.stringValue, let commands = json["commands"]?.stringValue,
                let replyTo = json["replyTo"]?.stringValue, let correlation = json["corr"]?.intValue
            else { return nil }
            return .sessionCommands(session: session, commands: commands, replyTo: replyTo, correlation: UInt64(truncatingIfNeeded: correlation))
        case "cmdResult":
            // The status becomes an HTTP status line: anything outside 100-599 is not one (NIO traps on a negative one).
            guard let correlation = json["corr"]?.intValue, let status = json["status"]?.intValue, (100...599).contains(status) else {
                return nil
            }
            return .sessionCommandsResult(
                correlation: UInt64(truncatingIfNeeded: correlation), status: status,
                accepted: json["accepted"]?.intValue ?? 0, message: json["message"]?.stringValue ?? "")
        default:
            return nil
        }
    }
}
