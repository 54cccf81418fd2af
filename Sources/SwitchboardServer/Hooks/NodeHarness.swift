public import Logging
public import NIOCore
public import SwitchboardBroker
public import SwitchboardCore

/// A node's parts on one event loop that the caller runs: the hub, one `LoopFanout` and a broker
/// the caller builds, with exactly the handlers a running node puts on its connections.
///
/// The one hook through which the tests, the fuzz targets (`Fuzz/`) and the allocation
/// benchmarks (`Benchmarks/`) reach a node; `SwitchboardServerTesting.EmbeddedNode` puts it on an
/// `EmbeddedEventLoop`. Not API: `@_spi(Harness) import SwitchboardServer`. The harness code
/// itself (feeding bytes, counting writes) lives with its users, not here.
///
/// Confined to `eventLoop`: use it on the thread that runs that loop.
@_spi(Harness)
public final class NodeHarness {
    let context: NodeContext
    private let upgrader: WebSocketUpgrader
    /// Reused by `fanOut`, so a benchmark measures the loop's work and not this array.
    private var ops: [FanoutOp] = []

    /// The loop the hub, the fan-out and the broker's events run on.
    public var eventLoop: any EventLoop { self.context.hub.eventLoop }

    /// The broker the node was built on.
    public var broker: any Broker { self.context.broker }

    /// - Parameters:
    ///   - broker: a broker whose events arrive on `eventLoop`.
    ///   - recordsLatency: give the fan-out the node's metrics, as a running node has, so that
    ///     each delivery also records its publish-to-deliver time.
    public init(
        eventLoop: any EventLoop,
        broker: any Broker,
        configuration: ServerConfiguration = ServerConfiguration(),
        recordsLatency: Bool = false,
        logger: Logger = Logger(label: "switchboard.harness", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        let hub = Hub(eventLoop: eventLoop, broker: broker, presenceTTL: configuration.presenceTTL, logger: logger)
        let fanout = LoopFanout(eventLoop: eventLoop, index: 0)
        fanout.hub = hub
        let metrics = NodeMetrics()
        if recordsLatency { fanout.metrics = metrics }
        let context = NodeContext(
            configuration: configuration, nodeID: "nharness", nodeName: "nharness",
            hub: hub, broker: broker, fanouts: [fanout], metrics: metrics, logger: logger)
        self.context = context
        self.upgrader = context.makeUpgrader()
        self.ops.reserveCapacity(1)
    }

    /// Starts the hub (it takes the broker's events from now on). The fan-out's ping sweep is not
    /// started: a harness moves time itself.
    public func start() -> EventLoopFuture<Void> {
        self.context.hub.start(fanouts: self.context.fanouts)
    }

    /// Stops the hub's timers and writes its last presence changes (the broker is the caller's to
    /// shut down, after this future).
    @discardableResult
    public func stop() -> EventLoopFuture<Void> {
        self.context.hub.stop()
    }

    // MARK: Connections

    /// The handlers of a WebSocket connection after its handshake: frame handler and client session.
    public func addWebSocketHandlers(to channel: any Channel) throws {
        try self.context.addWebSocketHandlers(to: channel)
    }

    /// The node's HTTP/1.1 pipeline (decoder limits, WebSocket upgrader, `HTTPHandler`), as a
    /// connection that is not a plain `/ws` handshake gets it; add it to an active channel.
    public func addHTTPHandlers(to channel: any Channel, headDeadline: NIODeadline) throws {
        try self.context.addHTTPHandlers(to: channel, upgrader: self.upgrader, headDeadline: headDeadline)
    }

    /// What an admitted connection starts with on a running node: the handshake router, which
    /// answers a plain `/ws` handshake from the bytes itself and hands anything else to the HTTP
    /// pipeline. Add it to an active channel.
    public func addAcceptedConnectionHandlers(to channel: any Channel, headDeadline: NIODeadline) throws {
        let context = self.context
        let upgrader = self.upgrader
        let router = HandshakeRouter(
            node: context, admission: .admitted, headDeadline: headDeadline,
            installHTTP: { channel, headDeadline in try context.addHTTPHandlers(to: channel, upgrader: upgrader, headDeadline: headDeadline) },
            installWebSocket: { channel in try context.addWebSocketHandlers(to: channel) })
        try channel.pipeline.syncOperations.addHandler(router)
    }

    /// What a connection from a trusted proxy (`proxyAddress`, which should be among the
    /// configuration's trusted proxies) starts with on a running node: the PROXY protocol handler,
    /// which reads a PROXY v2 header or the first head's `X-Forwarded-For`, then the caps by the
    /// named client's address and the handshake router, exactly as the node installs them.
    public func addTrustedProxyConnectionHandlers(to channel: any Channel, proxyAddress: String, headDeadline: NIODeadline) throws {
        let context = self.context
        let upgrader = self.upgrader
        try SwitchboardNode.admitFromTrustedProxy(
            channel, proxyAddress: proxyAddress, headDeadline: headDeadline, context: context, tls: nil,
            installHTTP: { channel, headDeadline in try context.addHTTPHandlers(to: channel, upgrader: upgrader, headDeadline: headDeadline) },
            installWebSocket: { channel in try context.addWebSocketHandlers(to: channel) })
    }

    /// The server's WebSocket frame handler alone: it passes `WebSocketMessage`s on.
    public static func addWebSocketFrameHandler(to channel: any Channel, maximumMessageSize: Int = 65_536) throws {
        try channel.pipeline.syncOperations.addHandler(WebSocketFrameHandler(maximumMessageSize: maximumMessageSize))
    }

    // MARK: Hot-path steps

    /// A publication encoded as the hub encodes it, once for every subscriber.
    public static func encode(_ publication: Publication, channel: String, allocator: ByteBufferAllocator) -> EncodedPublication {
        EncodedPublication(message: .publication(channel: channel, publication, allocator: allocator))
    }

    /// What the loop does with a publication the hub encoded (`LoopFanout.apply` with one op): a
    /// write to every local subscriber of `channel`, then one flush per session.
    public func fanOut(_ encoded: EncodedPublication, channel: String, offset: UInt64, time: UInt64) {
        self.ops.append(.publication(channel: channel, offset: offset, time: time, encoded.message))
        self.context.fanouts[0].apply(self.ops)
        self.ops.removeAll(keepingCapacity: true)
    }

    // MARK: Parsers a client's bytes reach

    /// The parser (with its limits) sessions read client messages with.
    public static var clientMessageParser: JSONParser { ClientSession.parser }

    /// `ClientSession.parseCommands`: the commands of an HTTP body, nil when it is refused.
    public static func parseCommands(_ body: [UInt8], allowConnect: Bool, maximumCommands: Int = 100) -> [ClientMessage]? {
        try? ClientSession.parseCommands(ByteBuffer(bytes: body), allowConnect: allowConnect, maximumCommands: maximumCommands).get()
    }

    /// `EventStreamSessionID(_:)`: the parts of an SSE session id, nil when it is malformed.
    public static func parseSessionID(_ text: Substring) -> (client: String, secret: String, node: String, loop: Int)? {
        EventStreamSessionID(text).map { ($0.client, $0.secret, $0.node, $0.loop) }
    }

    /// `HTTPQuery(uri:)`: the decoded query of a request target.
    public static func parseQuery(uri: String) -> [String: String] {
        HTTPQuery(uri: uri).values
    }

    /// `HTTPQuery.decode(_:)`: one percent-decoded query component, nil when malformed.
    public static func decodeQueryComponent(_ text: Substring) -> String? {
        HTTPQuery.decode(text)
    }
}

@available(*, unavailable)
extension NodeHarness: Sendable {}

/// A publication's push, encoded once (see `NodeHarness.encode`).
@_spi(Harness)
public struct EncodedPublication: Sendable {
    let message: OutboundMessage

    /// The frame every WebSocket subscriber is sent.
    public var webSocketFrame: ByteBuffer { self.message.webSocketFrame }
}
