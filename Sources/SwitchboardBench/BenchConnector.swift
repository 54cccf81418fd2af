import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Opens the bench's client connections: raw NIO `ClientBootstrap`s bound
/// to a source address (with `IP_BIND_ADDRESS_NO_PORT`, so each source
/// address gives ~28k ports per destination), the HTTP upgrade through
/// NIOHTTP1 and `NIOWebSocketClientUpgrader`, then one `BenchClientHandler`.
///
/// Connection i goes to event loop i mod L and records into that loop's
/// `LoopCounters`; nothing is shared between loops on the message path.
/// Publishers get a loop of their own (the last one), so pacing is not held
/// up by a loop busy reading deliveries.
final class BenchConnector: Sendable {
    /// Linux `IP_BIND_ADDRESS_NO_PORT`: pick the source port at connect(), not bind().
    private static let bindAddressNoPort = ChannelOptions.Types.SocketOption(
        level: NIOBSDSocket.OptionLevel.ip,
        name: NIOBSDSocket.Option(rawValue: 24)
    )

    let loops: [any EventLoop]
    let counters: [NIOLoopBound<LoopCounters>]
    private let sources: [SocketAddress]
    private let configuration: BenchConfiguration

    init(
        loops: [any EventLoop],
        counters: [NIOLoopBound<LoopCounters>],
        connectionLoopCount: Int,
        configuration: BenchConfiguration
    ) throws {
        self.loops = loops
        self.connectionLoopCount = max(1, min(connectionLoopCount, loops.count))
        self.counters = counters
        self.configuration = configuration
        guard let first = IPv4.value(configuration.sourceAddress) else {
            throw BenchError(.invalidConfiguration, "bad source address \(configuration.sourceAddress)")
        }
        self.sources = try (0..<max(1, configuration.sourceAddressCount)).map {
            try SocketAddress(ipAddress: IPv4.text(first + UInt32($0)), port: 0)
        }
    }

    /// Loops for subscriber (and connect/idle) connections; a publisher loop may follow them.
    let connectionLoopCount: Int

    func loopIndex(for index: Int) -> Int { index % self.connectionLoopCount }

    /// The publishers' own loop (the last one).
    var publisherSlot: Int { self.loops.count - 1 }

    private func bootstrap(loop: any EventLoop, index: Int, url: BenchURL) -> ClientBootstrap {
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.milliseconds(Int64(self.configuration.handshakeTimeout * 1000)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        if !url.isIPv6 {
            bootstrap = bootstrap
                .channelOption(Self.bindAddressNoPort, value: 1)
                .bind(to: self.sources[index % self.sources.count])
        }
        return bootstrap
    }

    /// Opens WebSocket connection `index` (also its loop slot and source
    /// address) to `url`; succeeds when the `connect` reply arrived. A
    /// subscriber then subscribes to `subscribeTo` on its own.
    func openWebSocket(
        index: Int,
        url: BenchURL,
        subscribeTo: String?,
        countsHandshake: Bool = true,
        slot: Int? = nil,
        pingPong: PingPongSettings? = nil
    ) -> EventLoopFuture<BenchConnection> {
        let slot = slot ?? self.loopIndex(for: index)
        let loop = self.loops[slot]
        let bound = self.counters[slot]
        let address: SocketAddress
        do {
            address = try SocketAddress(ipAddress: url.ipAddress, port: url.port)
        } catch {
            return loop.makeFailedFuture(error)
        }
        let established = loop.makePromise(of: Void.self)
        let dialStart = NIODeadline.now()
        let token = self.configuration.token(forConnection: index)
        let publishers = self.configuration.publishers
        let connect = self.bootstrap(loop: loop, index: index, url: url)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = BenchClientHandler(
                        loop: bound.value,
                        subscribeChannel: subscribeTo,
                        token: token,
                        publishers: publishers,
                        established: established,
                        dialStart: dialStart,
                        countsHandshake: countsHandshake,
                        pingPong: pingPong
                    )
                    let boundHandler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
                    let request = UpgradeRequestHandler(url: url, established: established)
                    let boundRequest = NIOLoopBound(request, eventLoop: channel.eventLoop)
                    let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 24, automaticErrorHandling: true) { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(boundHandler.value)
                        }
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        leftOverBytesStrategy: .forwardBytes,
                        withClientUpgrade: (
                            upgraders: [upgrader],
                            completionHandler: { context in
                                context.pipeline.syncOperations.removeHandler(boundRequest.value, promise: nil)
                            }
                        )
                    )
                    try channel.pipeline.syncOperations.addHandler(request)
                }
            }
            .connect(to: address)
        return self.finish(connect: connect, established: established, loop: loop, slot: slot, index: index)
    }

    /// Opens an HTTP API connection for publishing; succeeds once connected.
    func openAPI(index: Int, url: BenchURL, slot: Int? = nil) -> EventLoopFuture<BenchConnection> {
        let slot = slot ?? self.loopIndex(for: index)
        let loop = self.loops[slot]
        let bound = self.counters[slot]
        let apiKey = self.configuration.apiKey ?? ""
        let window = self.configuration.apiWindow
        let address: SocketAddress
        do {
            address = try SocketAddress(ipAddress: url.ipAddress, port: url.port)
        } catch {
            return loop.makeFailedFuture(error)
        }
        let established = loop.makePromise(of: Void.self)
        let connect = self.bootstrap(loop: loop, index: index, url: url)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        APIPublishHandler(loop: bound.value, url: url, apiKey: apiKey, window: window)
                    )
                }
            }
            .connect(to: address)
        connect.whenSuccess { _ in established.succeed(()) }
        return self.finish(connect: connect, established: established, loop: loop, slot: slot, index: index)
    }

    private func finish(
        connect: EventLoopFuture<any Channel>,
        established: EventLoopPromise<Void>,
        loop: any EventLoop,
        slot: Int,
        index: Int
    ) -> EventLoopFuture<BenchConnection> {
        let seconds = self.configuration.handshakeTimeout
        let timeout = loop.scheduleTask(in: .milliseconds(Int64(seconds * 1000))) {
            established.fail(BenchError(.connection, "no connect reply within \(seconds) s"))
        }
        connect.whenComplete { result in
            switch result {
            case .failure(let error):
                established.fail(error)
            case .success(let channel):
                established.futureResult.whenFailure { _ in BenchConnection.abort(channel) }
            }
        }
        established.futureResult.whenComplete { _ in timeout.cancel() }
        return established.futureResult.and(connect).map { _, channel in
            BenchConnection(channel: channel, loopIndex: slot, index: index)
        }
    }
}
