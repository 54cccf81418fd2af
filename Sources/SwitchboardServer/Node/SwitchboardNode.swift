import CoreMetrics
import Foundation
public import Logging
import NIOConcurrencyHelpers
public import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import SwitchboardBroker
import SwitchboardCore
import SwitchboardAuth

/// One Switchboard node: the listener, its pipelines, the hub, the broker and
/// the lifecycle (start, drain, stop).
public final class SwitchboardNode: Sendable {
    public let configuration: ServerConfiguration
    public let nodeID: String
    private let group: MultiThreadedEventLoopGroup
    private let context: NodeContext
    /// Node-side rebalancing (nil with `rebalance: false`).
    private let rebalancer: NodeRebalancer?
    private let logger: Logger
    private let state = NIOLockedValueBox(RunState())
    /// The TLS context every connection starts with; nil when the node speaks plain TCP.
    private let tls: NodeTLS?

    private struct RunState {
        /// The listeners, one per event loop on one port.
        var serverChannels: [any Channel] = []
        var agentChannel: (any Channel)?
        var announceTask: RepeatedTask?
        var drainStarted = false
        var drainCutShort = false
        /// The first `stop()`'s work, which later calls wait for.
        var stopping: Task<Void, Never>?
    }

    /// Makes the node's broker for a node id, given the node's event loops (one hub shard on each,
    /// in this order): an unsharded broker delivers its events on the first; the memory broker
    /// shards its channels over all of them by the hub's rule, so a channel's broker shard and hub
    /// shard share a loop.
    public typealias BrokerFactory = @Sendable (_ eventLoops: [any EventLoop], _ nodeID: String) throws -> any Broker

    /// Creates a node (bind with `start()`) on the broker `makeBroker` builds (the memory broker
    /// by default; the `switchboard` executable picks Redis from `configuration.broker`).
    public init(
        configuration: ServerConfiguration,
        logger: Logger,
        makeBroker: BrokerFactory = { eventLoops, _ in MemoryBroker(eventLoops: eventLoops) }
    ) throws {
        self.configuration = configuration
        self.logger = logger
        try SecurityPosture.check(configuration)
        let tokens = try NodeContext.makeTokenAuthority(configuration, logger: logger)
        SecurityPosture.announce(configuration, logger: logger)
        self.nodeID = Self.makeNodeID()
        self.tls = try NodeTLS(configuration: configuration)
        let threads = configuration.eventLoopThreads > 0 ? configuration.eventLoopThreads : UsableCores.count()
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let loops = Array(self.group.makeIterator())
        let broker: any Broker
        do {
            broker = try makeBroker(loops, self.nodeID)
        } catch {
            try? self.group.syncShutdownGracefully()
            throw error
        }
        let hub = Hub(eventLoops: loops, broker: broker, presenceTTL: configuration.presenceTTL, logger: logger)
        let metrics = NodeMetrics(commit: NodeMetrics.commitFromEnvironment())
        let fanouts = loops.enumerated().map { LoopFanout(eventLoop: $0.element, index: $0.offset) }
        for fanout in fanouts {
            fanout.hub = hub
            fanout.metrics = metrics
        }
        hub.metricsSink = metrics
        self.context = NodeContext(
            configuration: configuration,
            nodeID: self.nodeID,
            nodeName: configuration.nodeName.isEmpty ? self.nodeID : configuration.nodeName,
            hub: hub,
            broker: broker,
            fanouts: fanouts,
            metrics: metrics,
            logger: logger,
            tokens: tokens
        )
        self.rebalancer = configuration.rebalance ? NodeRebalancer(context: self.context) : nil
    }

    static func makeNodeID() -> String {
        RandomID.alphanumeric(5, prefix: "n")
    }

    /// Binds the listener and starts serving; returns the bound port.
    public func start() async throws -> Int {
        try await self.context.hub.start(fanouts: self.context.fanouts).get()
        for fanout in self.context.fanouts { fanout.start() }
        let context = self.context
        try? await context.tokens.start(on: context.fanouts[0].eventLoop).get()  // the first JWKS fetch, at most 2 s
        let configuration = self.configuration
        let trustedProxies = context.trustedProxies
        let tls = self.tls
        let upgrader = context.makeUpgrader()
        // Made once, used by every connection's router.
        let installHTTP: @Sendable (any Channel, NIODeadline) throws -> Void = { channel, headDeadline in
            try context.addHTTPHandlers(to: channel, upgrader: upgrader, headDeadline: headDeadline)
        }
        let installWebSocket: @Sendable (any Channel) throws -> Void = { channel in
            try context.addWebSocketHandlers(to: channel)
        }
        let waterMarks = ChannelOptions.Types.WriteBufferWaterMark(low: configuration.outboundLimit / 2, high: configuration.outboundLimit)
        let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65_536)
        // One listener per event loop on the same port (SO_REUSEPORT): the kernel spreads connections
        // over them and each is served by the loop that accepted it, with no hand-over to another loop
        // (a wake-up of another thread per connection, as one shared listener makes).
        let bootstrap = { (loop: any EventLoopGroup) in ServerBootstrap(group: loop, childGroup: loop)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.socket(SocketOptionLevel(SOL_SOCKET), SO_REUSEPORT), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptShedder(connections: context.connections, trustedProxies: trustedProxies, shed: context.metrics.refusedConnectionsShed))
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Set here, synchronously: `childChannelOption` applies each option through a chain of
                    // futures, a cost every accepted connection paid (about 5 % of a handshake's CPU).
                    // No TCP_NODELAY: the socket inherits it from the listener, where ServerBootstrap sets
                    // it (setting it again is two system calls: NIO reads the local address first).
                    guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
                    try options.setOption(.writeBufferWaterMark, value: waterMarks)
                    try options.setOption(.maxMessagesPerRead, value: 4)
                    // Small first reads: an idle connection keeps its last receive buffer (NIO's default starts at 2 KB).
                    try options.setOption(.recvAllocator, value: receiveAllocator)
                    let address = channel.remoteAddress?.ipText ?? ""
                    let headDeadline = NIODeadline.now() + .milliseconds(Int64(configuration.headTimeout * 1000))
                    guard trustedProxies.contains(address) else {
                        return try Self.admit(
                            channel, address: address, capped: true, headDeadline: headDeadline, context: context, tls: tls,
                            installHTTP: installHTTP, installWebSocket: installWebSocket)
                    }
                    try Self.admitFromTrustedProxy(
                        channel, proxyAddress: address, headDeadline: headDeadline, context: context, tls: tls,
                        installHTTP: installHTTP, installWebSocket: installWebSocket)
                }
            }
        }
        var listeners: [any Channel] = []
        var address: SocketAddress?
        do {
            // Linux spreads connections over sockets sharing a port; elsewhere the last socket bound
            // would take them all: one listener there, its connections handed to the loops in turn.
            #if os(Linux)
            let groups: [any EventLoopGroup] = Array(self.group.makeIterator())
            #else
            let groups: [any EventLoopGroup] = [self.group]
            #endif
            for loop in groups {
                // Port 0 asks for any free port: the other loops' listeners take the one the first got.
                let channel = try await bootstrap(loop).bind(host: configuration.host, port: address?.port ?? configuration.port).get()
                listeners.append(channel)
                address = address ?? channel.localAddress
            }
        } catch {
            for listener in listeners { try? await listener.close() }
            throw error
        }
        guard let address else { throw ChannelError.operationUnsupported }
        self.state.withLockedValue { $0.serverChannels = listeners }
        if configuration.haproxyAgentPort > 0 {
            let agent = try await HAProxyAgent.start(group: self.group, host: configuration.host, port: configuration.haproxyAgentPort) {
                HAProxyAgent.reply(
                    draining: context.isDraining, connections: context.connections.total, maximum: context.connections.maximum)
            }
            self.state.withLockedValue { $0.agentChannel = agent }
        }
        self.startAnnouncing(address: address)
        self.rebalancer?.start()
        return address.port ?? configuration.port
    }

    /// Counts a connection against the caps (by its client's address) and installs TLS (when
    /// configured) and the handshake router, first in the pipeline or after `after` (the PROXY
    /// protocol handler: a proxy's header comes before the TLS bytes). The TLS handshake runs
    /// inside the head deadline, whose timer the router holds from now on.
    /// A connection from a trusted proxy: the proxy names the client (PROXY v2 or
    /// `X-Forwarded-For`) before the caps apply, then the connection is admitted as the client's.
    static func admitFromTrustedProxy(
        _ channel: any Channel, proxyAddress: String, headDeadline: NIODeadline, context: NodeContext, tls: NodeTLS?,
        installHTTP: @escaping @Sendable (any Channel, NIODeadline) throws -> Void,
        installWebSocket: @escaping @Sendable (any Channel) throws -> Void
    ) throws {
        let trustedProxies = context.trustedProxies
        try channel.pipeline.syncOperations.addHandler(
            ProxyProtocolHandler(proxyAddress: proxyAddress, headDeadline: headDeadline) { handlerContext, client in
                try Self.admit(
                    handlerContext.channel, address: client, capped: client != proxyAddress && !trustedProxies.contains(client),
                    headDeadline: headDeadline, context: context, tls: tls, installHTTP: installHTTP,
                    installWebSocket: installWebSocket, after: handlerContext.handler)
            })
    }

    private static func admit(
        _ channel: any Channel, address: String, capped: Bool, headDeadline: NIODeadline, context: NodeContext, tls: NodeTLS?,
        installHTTP: @escaping @Sendable (any Channel, NIODeadline) throws -> Void,
        installWebSocket: @escaping @Sendable (any Channel) throws -> Void, after: (any ChannelHandler)? = nil
    ) throws {
        let admission = context.connections.admit(address: address, capped: capped)
        var deadline = headDeadline
        switch admission {
        case .admitted:
            channel.closeFuture.whenComplete { _ in context.connections.release(address: address) }
        case .nodeFull:
            context.metrics.refusedConnectionsNode.increment()
            deadline = min(deadline, .now() + .seconds(2))  // an uncounted socket is let go soon
        case .addressFull:
            context.metrics.refusedConnectionsAddress.increment()
            deadline = min(deadline, .now() + .seconds(2))
        case .addressRate:
            context.metrics.refusedConnectionsRate.increment()
            deadline = min(deadline, .now() + .seconds(2))
        }
        let router = HandshakeRouter(
            node: context, admission: admission, headDeadline: deadline, installHTTP: installHTTP,
            installWebSocket: installWebSocket)
        var handlers: [any ChannelHandler] = [router]
        if let tls { handlers.insert(tls.makeHandler(), at: 0) }
        if let after {
            try channel.pipeline.syncOperations.addHandlers(handlers, position: .after(after))
        } else {
            try channel.pipeline.syncOperations.addHandlers(handlers)
        }
    }

    /// Whether the node speaks TLS on its port.
    public var usesTLS: Bool { self.tls != nil }

    /// Reads the TLS certificate and key again (SIGHUP): new connections use them, open ones keep
    /// theirs. On failure the current ones stay and the error says why. Nothing to do without TLS.
    public func reloadTLS() throws {
        try self.tls?.reload()
    }

    private func startAnnouncing(address: SocketAddress) {
        let context = self.context
        if let advertise = context.configuration.advertise {
            context.advertisedAddress = advertise.registryAddress(boundPort: address.port ?? 0)
        } else {
            let ip = address.ipAddress ?? "?"
            context.advertisedAddress = ip.contains(":") ? "[\(ip)]:\(address.port ?? 0)" : "\(ip):\(address.port ?? 0)"
            if ip == "0.0.0.0" || ip == "::" {
                context.logger.warning(
                    "bound to all interfaces: the registry entry names \(context.advertisedAddress), which balancers skip; set --advertise HOST[:PORT]")
            }
        }
        _ = context.announceSelf()
        let task = context.hub.eventLoop.scheduleRepeatedTask(
            initialDelay: NodeContext.announceInterval, delay: NodeContext.announceInterval
        ) { _ in
            _ = context.announceSelf()
            context.retryUserReleases()
            context.trimHeapIfConnectionsFell()
        }
        self.state.withLockedValue { $0.announceTask = task }
    }

    /// Graceful drain: readiness fails at once, the listener closes after a
    /// short grace, clients are asked to reconnect spread over the drain
    /// window, and the call returns when they are gone, the window is over,
    /// or the calling task is cancelled (a second signal).
    public func drain() async {
        let first = self.state.withLockedValue { state -> Bool in
            defer { state.drainStarted = true }
            return !state.drainStarted
        }
        guard first else { return }
        self.context.setDraining()
        let window = max(0, self.configuration.drainSeconds)
        self.logger.info("draining", metadata: ["seconds": "\(window)"])
        let grace = min(2.0, window / 2)
        for serverChannel in self.state.withLockedValue({ $0.serverChannels }) {
            serverChannel.eventLoop.scheduleTask(in: .milliseconds(Int64(grace * 1000))) {
                serverChannel.close(promise: nil)
            }
        }
        let started = ContinuousClock.now
        let gone = self.context.fanouts.map { $0.drain(over: .milliseconds(Int64(window * 800)), code: .shutdown) }
        let allGone = EventLoopFuture.andAllComplete(gone, on: self.context.hub.eventLoop)
        let cutShort = await Self.waitForFirst(allGone, orAfter: .milliseconds(Int64(window * 1000)), on: self.context.hub.eventLoop)
        if cutShort {
            self.state.withLockedValue { $0.drainCutShort = true }
            self.logger.warning("drain cut short")
            return
        }
        // The listener closes after the grace: stay until then, so a late connection is not reset.
        let remaining = Duration.milliseconds(Int64(grace * 1000)) - (ContinuousClock.now - started)
        if remaining > .zero { try? await Task.sleep(for: remaining) }
    }

    /// Whether `start()` bound the listeners.
    var isStarted: Bool { self.state.withLockedValue { !$0.serverChannels.isEmpty } }

    /// Whether a drain was cut short by cancellation (a second signal): the process should exit non-zero.
    public var drainWasCutShort: Bool { self.state.withLockedValue { $0.drainCutShort } }

    /// Waits until `future` completes or `timeout` passes; returns true when the task was cancelled first.
    private static func waitForFirst(_ future: EventLoopFuture<Void>, orAfter timeout: TimeAmount, on eventLoop: any EventLoop) async -> Bool {
        let waiter = NIOLockedValueBox<CheckedContinuation<Bool, Never>?>(nil)
        let finish: @Sendable (Bool) -> Void = { cancelled in waiter.withLockedValue { $0.take() }?.resume(returning: cancelled) }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                waiter.withLockedValue { $0 = continuation }
                if Task.isCancelled { return finish(true) }
                future.whenComplete { _ in finish(false) }
                eventLoop.scheduleTask(in: timeout) { finish(false) }
            }
        } onCancel: {
            finish(true)
        }
    }

    /// Stops everything: listener, timers, broker, threads. Only the first call does the work;
    /// every call returns once it is done.
    public func stop() async {
        let stopping = self.state.withLockedValue { state in
            if let stopping = state.stopping { return stopping }
            // Not cancelled with the caller (a second signal): the loops must not be shut under open sessions.
            let stopping = Task { await self.stopOnce() }
            state.stopping = stopping
            return stopping
        }
        await stopping.value
    }

    private func stopOnce() async {
        // Not ready, and no new SSE or long-poll session on connections kept alive.
        self.context.setDraining()
        // A JWKS fetch under way answers on the loops: they run until it has (its deadline is 2 s).
        let jwksFetch = self.context.tokens.stop()
        let (serverChannels, agentChannel, task) = self.state.withLockedValue { ($0.serverChannels, $0.agentChannel, $0.announceTask) }
        task?.cancel()
        self.rebalancer?.stop()
        for serverChannel in serverChannels { try? await serverChannel.close() }
        try? await agentChannel?.close()
        _ = try? await self.context.leaveRegistry().get()
        // Sessions still open (no drain, or one cut short) are closed while every loop still runs,
        // so their leaves reach the hub; sessions not connected yet are closed too, and no more
        // connect; waiting is bounded.
        let hubLoop = self.context.hub.eventLoop
        let gone = self.context.fanouts.map { $0.closeEverySession(code: .shutdown) }
        let allGone = EventLoopFuture.andAllComplete(gone, on: hubLoop)
        _ = await Self.waitForFirst(allGone, orAfter: .seconds(2), on: hubLoop)
        // The shards' last presence writes reach the broker before it (and the loops it runs on)
        // shut down; bounded like the sessions' close above.
        let hubStopped = self.context.hub.stop()
        _ = await Self.waitForFirst(hubStopped, orAfter: .seconds(2), on: hubLoop)
        for fanout in self.context.fanouts { fanout.stop() }
        _ = try? await self.context.broker.shutdown().get()
        if let jwksFetch {
            _ = await Self.waitForFirst(jwksFetch, orAfter: .seconds(3), on: hubLoop)
        }
        try? await self.group.shutdownGracefully()
    }
}
