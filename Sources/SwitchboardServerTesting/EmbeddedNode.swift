public import NIOCore
public import NIOEmbedded
public import SwitchboardBroker
@_spi(Harness) public import SwitchboardServer

/// A node on one `EmbeddedEventLoop`, with client connections on `EmbeddedChannel`s: the one
/// place that builds an embedded node, for the tests, the fuzz targets in `Fuzz/` and the
/// allocation benchmarks in `Benchmarks/`.
///
/// Nothing runs until the caller runs the loop (`loop.run()`, `advance(by:)`), so every step is
/// deterministic. Use it on the thread that made it (an `EmbeddedEventLoop` is not thread-safe).
public struct EmbeddedNode<NodeBroker: Broker> {
    /// The loop the hub, the fan-out, the broker and every connection run on.
    public let loop: EmbeddedEventLoop
    /// The broker the node runs on.
    public let broker: NodeBroker
    /// The node's parts, with the handlers a running node puts on its connections.
    @_spi(Harness) public let harness: NodeHarness

    /// The address every connection comes from.
    public static var clientAddress: SocketAddress { try! SocketAddress(ipAddress: "127.0.0.1", port: 1) }

    /// A started node on the memory broker.
    public init(configuration: ServerConfiguration = ServerConfiguration(), recordsLatency: Bool = false) throws
    where NodeBroker == MemoryBroker {
        try self.init(configuration: configuration, recordsLatency: recordsLatency, makeBroker: { MemoryBroker(eventLoop: $0) })
    }

    /// A started node on the broker `makeBroker` builds for the node's loop.
    public init(
        configuration: ServerConfiguration = ServerConfiguration(),
        recordsLatency: Bool = false,
        makeBroker: (EmbeddedEventLoop) -> NodeBroker
    ) throws {
        self.loop = EmbeddedEventLoop()
        self.broker = makeBroker(self.loop)
        self.harness = NodeHarness(eventLoop: self.loop, broker: self.broker, configuration: configuration, recordsLatency: recordsLatency)
        let started = self.harness.start()
        self.loop.run()
        try started.wait()
    }

    /// A connected client whose WebSocket handshake is done: frame handler and session in place.
    /// `front`, when given, goes first in the pipeline (to count or drop what the node writes).
    public func openWebSocket(front: (any ChannelHandler)? = nil) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: self.loop)
        if let front { try channel.pipeline.syncOperations.addHandler(front) }
        try self.harness.addWebSocketHandlers(to: channel)
        try channel.connect(to: Self.clientAddress).wait()
        return channel
    }

    /// A connected client on the node's HTTP/1.1 pipeline (what any request but a plain `/ws`
    /// handshake reaches), with `headDeadline` for its first request head. The default is 10 s
    /// from now on the system clock, which `HTTPHandler` counts in; the embedded loop's clock
    /// starts at zero, so that deadline only comes when the loop is moved that far.
    public func openHTTP(headDeadline: NIODeadline = .now() + .seconds(10)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: self.loop)
        try channel.connect(to: Self.clientAddress).wait()
        try self.harness.addHTTPHandlers(to: channel, headDeadline: headDeadline)
        return channel
    }

    /// A connected client as a running node accepts it: the handshake router first, which answers
    /// a plain `/ws` handshake itself and hands anything else to the HTTP pipeline. `headDeadline`
    /// as for `openHTTP`.
    public func openAccepted(headDeadline: NIODeadline = .now() + .seconds(10)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: self.loop)
        try channel.connect(to: Self.clientAddress).wait()
        try self.harness.addAcceptedConnectionHandlers(to: channel, headDeadline: headDeadline)
        return channel
    }

    /// A connection from a trusted proxy at `clientAddress` as a running node accepts it: the
    /// PROXY protocol handler first (a PROXY v2 header, or the first head's `X-Forwarded-For`),
    /// then the caps by the client it names and the handshake router. The node's configuration
    /// should trust `127.0.0.1`. `headDeadline` as for `openHTTP`.
    public func openFromTrustedProxy(headDeadline: NIODeadline = .now() + .seconds(10)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: self.loop)
        try channel.connect(to: Self.clientAddress).wait()
        try self.harness.addTrustedProxyConnectionHandlers(to: channel, proxyAddress: "127.0.0.1", headDeadline: headDeadline)
        return channel
    }

    /// Moves the loop's clock and runs what falls due (timeouts, sweeps).
    public func advance(by amount: TimeAmount) {
        self.loop.advanceTime(by: amount)
        self.loop.run()
    }

    /// Stops the node and its broker and shuts the loop down (close the channels first).
    public func shutdown() {
        self.loop.run()
        self.harness.stop()
        self.loop.run()  // the shards' last presence writes, before the broker shuts down
        _ = self.broker.shutdown()
        self.loop.run()
        try? self.loop.syncShutdownGracefully()
    }
}

extension EmbeddedChannel {
    /// Every byte the channel has written since the last read, in order.
    public func readAllOutbound() -> [UInt8] {
        var out: [UInt8] = []
        while let buffer = (try? self.readOutbound(as: ByteBuffer.self)) ?? nil {
            out.append(contentsOf: buffer.readableBytesView)
        }
        return out
    }
}
