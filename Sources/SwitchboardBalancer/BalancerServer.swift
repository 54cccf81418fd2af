public import Logging
public import NIOCore
import NIOConcurrencyHelpers
import NIOPosix
import NIOSSL
import RedisClient

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `switchboard balance` as a library: the client listeners, the optional admin listener and the health
/// checker around one `NodeRouter`.
///
/// Every accepted connection gets a `FrontHandler` (head, pick, connect on the same event loop), then a
/// `TunnelHandler` pair. Past `maxConnections` a new connection is answered 503 and closed. Accept errors
/// such as EMFILE are backed off by NIO's `AcceptBackoffHandler` (ServerBootstrap installs it), so a
/// flood does not spin the loop.
public final class BalancerServer: Sendable {
    /// The configuration at start; `current` is the one in force after reloads.
    public let configuration: BalancerConfiguration
    public let router: NodeRouter
    private let group: any EventLoopGroup
    private let logger: Logger
    /// The client listeners, one per event loop on one port.
    private let frontListeners = NIOLockedValueBox<[any Channel]>([])
    private let adminListeners = NIOLockedValueBox<[any Channel]>([])
    private let checker = NIOLockedValueBox<HealthChecker?>(nil)
    private let watcher = NIOLockedValueBox<RegistryWatcher?>(nil)
    /// What a reload may change for new connections: read once per accepted connection.
    private let reloadable: NIOLockedValueBox<Reloadable>

    private struct Reloadable {
        var configuration: BalancerConfiguration
        var settings: FrontSettings
        var tls: NIOSSLContext?
    }

    /// A warning when `--max-connections` tunnels (two descriptors each, and some for the listeners,
    /// checks and logs) cannot fit in the open-files limit; nil when they can. Past the limit the
    /// balancer answers 503 without blaming the nodes, but the cap is then not what was asked for.
    static func descriptorWarning(maxConnections: Int, openFilesLimit: Int?) -> String? {
        guard let limit = openFilesLimit else { return nil }
        let fits = max(0, (limit - Self.reservedDescriptors) / 2)
        guard maxConnections > fits else { return nil }
        return "--max-connections \(maxConnections) needs about \(2 * maxConnections + Self.reservedDescriptors) open files, "
            + "the limit is \(limit): at most about \(fits) tunnels fit (raise the limit, e.g. ulimit -n, or lower --max-connections)"
    }

    /// Descriptors kept for listeners, health checks, the registry, logs and files.
    static let reservedDescriptors = 100

    /// The soft `RLIMIT_NOFILE`, nil when it cannot be read or is unlimited.
    static func openFilesLimit() -> Int? {
        var limit = rlimit()
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur < 1 << 40 else { return nil }  // (RLIM_INFINITY: no limit)
        return Int(min(limit.rlim_cur, 1 << 30))
    }

    /// Validates the configuration; nothing listens until `start()`.
    public init(configuration: BalancerConfiguration, group: any EventLoopGroup, logger: Logger) throws {
        try configuration.validate()
        self.configuration = configuration
        self.router = NodeRouter(configuration: configuration)
        self.reloadable = NIOLockedValueBox(
            Reloadable(configuration: configuration, settings: FrontSettings(configuration: configuration), tls: nil))
        self.group = group
        self.logger = logger
    }

    /// Resolves the nodes, binds the listeners and starts the health checks; returns the bound ports.
    public func start() async throws -> (port: Int, adminPort: Int?) {
        if let warning = Self.descriptorWarning(maxConnections: self.configuration.maxConnections, openFilesLimit: Self.openFilesLimit()) {
            self.logger.warning("\(warning)")
        }
        let addresses = try Self.resolve(self.configuration.nodes)
        var redis: RedisConfiguration?
        if let registry = self.configuration.registry {
            do {
                let parsed = try RedisConfiguration(url: registry)
                try parsed.checkTLSFiles()
                redis = parsed
            } catch {
                throw BalancerConfigurationError("--registry: \(error)")
            }
        }
        let tls = try Self.makeTLSContext(self.configuration)
        self.reloadable.withLockedValue { $0.tls = tls }
        self.router.setMembers(self.configuration.nodes, resolved: addresses)
        let settings = FrontSettings(configuration: self.configuration)
        let reloadable = self.reloadable
        let sweepers = try await TunnelSweepers.start(on: self.group, idleTimeout: self.configuration.tunnelIdleTimeout)
        let router = self.router
        let logger = self.logger
        // One listener per event loop on the same port (SO_REUSEPORT): the kernel spreads connections
        // over them and each is served whole by the loop that accepted it, with no hand-over to another
        // loop (a wake-up of another thread per connection, as one shared listener makes).
        var port = self.configuration.port
        var fronts: [any Channel] = []
        do {
            for loop in Self.listenerGroups(self.group) {
                let front = try await ServerBootstrap(group: loop, childGroup: loop)
                    .serverChannelOption(.backlog, value: 1024)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .serverChannelOption(.socket(SocketOptionLevel(SOL_SOCKET), SO_REUSEPORT), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            // Synchronously: `childChannelOption` applies each option through a chain of futures.
                            try FrontSettings.applyTunnelOptions(to: channel, settings: settings)
                            let (settings, tls) = reloadable.withLockedValue { ($0.settings, $0.tls) }
                            let admitted = router.admitClient()
                            if admitted {
                                channel.closeFuture.whenComplete { _ in router.clientClosed() }
                            }
                            if !admitted, tls != nil {
                                // Over the limit on a TLS listener: the 503 could only go out after a
                                // handshake the client may never start, its descriptor held until the
                                // header timeout meanwhile; closed at once instead.
                                channel.close(promise: nil)
                                return
                            }
                            if let tls {
                                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                            }
                            try channel.pipeline.syncOperations.addHandler(
                                FrontHandler(
                                    settings: settings, router: router, logger: logger, refuseOnArrival: !admitted,
                                    sweepers: sweepers))
                        }
                    }
                    .bind(host: self.configuration.host, port: port)
                    .get()
                fronts.append(front)
                // Port 0 asks for any free port: the other loops' listeners take the one the first got.
                port = front.localAddress?.port ?? port
            }
        } catch {
            for front in fronts { try? await front.close() }
            throw error
        }
        self.frontListeners.withLockedValue { $0 = fronts }
        var adminPort: Int?
        if let adminHost = self.configuration.adminHost, let port = self.configuration.adminPort {
            let timeout = self.configuration.headerTimeout
            let rebalanceRound = NodeRebalanceRound()
            let admin = try await ServerBootstrap(group: self.group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // The key and the check timeout as of now: a SIGHUP may have changed them.
                        let (key, checkTimeout) = reloadable.withLockedValue { ($0.configuration.nodeAPIKey, $0.configuration.checkTimeout) }
                        try channel.pipeline.syncOperations.addHandler(
                            AdminHandler(
                                router: router, headerTimeout: timeout, nodeAPIKey: key, nodeRequestTimeout: checkTimeout,
                                rebalanceRound: rebalanceRound))
                    }
                }
                .bind(host: adminHost, port: port)
                .get()
            self.adminListeners.withLockedValue { $0.append(admin) }
            adminPort = admin.localAddress?.port
        }
        if let redis {
            let watcher = RegistryWatcher(
                configuration: redis, eventLoop: self.group.next(), router: router, staticNodes: self.configuration.nodes,
                interval: self.configuration.registryInterval, logger: logger)
            self.watcher.withLockedValue { $0 = watcher }
            watcher.start()
        }
        let checker = HealthChecker(router: router, group: self.group, configuration: self.configuration, logger: logger)
        self.checker.withLockedValue { $0 = checker }
        checker.start()
        return (port, adminPort)
    }

    /// Applies a re-read configuration (SIGHUP) without touching a tunnel: the node list and weights,
    /// the algorithm, hashing, limits, timeouts and the client address forwarding apply to new
    /// connections at once, and the TLS certificate and key are read again (also when their paths did not
    /// change, so a renewed certificate is picked up). Everything is checked before anything changes: a
    /// configuration that does not validate, a node that does not resolve or a certificate that does not
    /// load throws and the running configuration stays. Returns the options that only apply at start and
    /// were changed (their running values are kept).
    public func reload(_ new: BalancerConfiguration) throws -> [String] {
        do {
            let ignored = try self.apply(new)
            self.router.countReload(applied: true)
            return ignored
        } catch {
            self.router.countReload(applied: false)
            throw error
        }
    }

    private func apply(_ new: BalancerConfiguration) throws -> [String] {
        try new.validate()
        let addresses = try Self.resolve(new.nodes)
        let current = self.reloadable.withLockedValue { $0.configuration }
        let ignored = new.restartOnlyDifferences(from: current)
        var applied = new
        // Keep the running values of what needs a restart.
        applied.host = current.host
        applied.port = current.port
        applied.adminHost = current.adminHost
        applied.adminPort = current.adminPort
        applied.registry = current.registry
        applied.eventLoopThreads = current.eventLoopThreads
        applied.checkInterval = current.checkInterval
        applied.checkTimeout = current.checkTimeout
        applied.rise = current.rise
        applied.fall = current.fall
        applied.logLevel = current.logLevel
        applied.checkWebSocket = current.checkWebSocket
        if (new.tlsCertificatePath == nil) != (current.tlsCertificatePath == nil) {
            applied.tlsCertificatePath = current.tlsCertificatePath
            applied.tlsKeyPath = current.tlsKeyPath
        }
        let tls = try Self.makeTLSContext(applied)
        if let warning = Self.descriptorWarning(maxConnections: applied.maxConnections, openFilesLimit: Self.openFilesLimit()) {
            self.logger.warning("\(warning)")
        }
        self.router.reconfigure(
            algorithm: applied.algorithm, hashBalanceFactor: applied.hashBalanceFactor, maxConnections: applied.maxConnections,
            rebalanceSpread: applied.rebalanceSpread)
        if let watcher = self.watcher.withLockedValue({ $0 }) {
            // One member set, static and registry nodes together: setting the static ones alone
            // first would drop the registry nodes' entries (drain, health, addresses) for a moment.
            watcher.setStaticNodes(applied.nodes, resolved: addresses)
        } else {
            self.router.setMembers(applied.nodes, resolved: addresses)
        }
        self.reloadable.withLockedValue {
            $0 = Reloadable(configuration: applied, settings: FrontSettings(configuration: applied), tls: tls)
        }
        return ignored
    }

    /// The configuration in force (the start one, or the last reloaded).
    public var current: BalancerConfiguration { self.reloadable.withLockedValue { $0.configuration } }

    /// Resolves host names once (IP literals need no lookup).
    private static func resolve(_ nodes: [BackendNode]) throws -> [String: SocketAddress] {
        var addresses: [String: SocketAddress] = [:]
        for node in nodes {
            do {
                addresses[node.id] = try SocketAddress.makeAddressResolvingHost(node.host, port: node.port)
            } catch {
                throw BalancerConfigurationError("node \(node.id): cannot resolve \(node.host): \(error)")
            }
        }
        return addresses
    }

    /// TLS 1.2 and 1.3 only (NIOSSL's default minimum is 1.0), ALPN `http/1.1`. BoringSSL's server-side
    /// session cache and TLS 1.3 tickets are on by default, so reconnect storms resume sessions. Nil when
    /// the configuration has no certificate.
    private static func makeTLSContext(_ configuration: BalancerConfiguration) throws -> NIOSSLContext? {
        guard let certificatePath = configuration.tlsCertificatePath else { return nil }
        guard let keyPath = configuration.tlsKeyPath else {
            throw BalancerConfigurationError("--tls-cert and --tls-key go together")
        }
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
            guard !chain.isEmpty else { throw BalancerConfigurationError("--tls-cert \(certificatePath): no certificate") }
            let key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
            tls.minimumTLSVersion = .tlsv12
            tls.applicationProtocols = ["http/1.1"]
            return try NIOSSLContext(configuration: tls)
        } catch let error as BalancerConfigurationError {
            throw error
        } catch {
            throw BalancerConfigurationError("TLS certificate or key unusable: \(error)")
        }
    }

    /// The groups to give a listener each: every loop where the kernel spreads connections over sockets
    /// sharing a port (Linux); elsewhere (the last socket bound would take them all) one listener
    /// whose connections go to the loops in turn.
    static func listenerGroups(_ group: any EventLoopGroup) -> [any EventLoopGroup] {
        #if os(Linux)
        Array(group.makeIterator())
        #else
        [group]
        #endif
    }

    /// Closes the client listener: no new connections; open tunnels, the admin listener, health checks
    /// and the registry go on (the first step of a drain).
    public func stopAccepting() async {
        let fronts = self.frontListeners.withLockedValue { channels in
            defer { channels = [] }
            return channels
        }
        for front in fronts {
            try? await front.close()
        }
    }

    /// Client connections open now.
    public var openClients: Int { self.router.snapshot().counters.open }

    /// Stops the health checks and closes the listeners (open tunnels are not touched).
    public func stop() async {
        self.checker.withLockedValue { $0?.stop() }
        if let watcher = self.watcher.withLockedValue({ $0 }) {
            try? await watcher.stop().get()
        }
        let listeners = self.adminListeners.withLockedValue { channels in
            defer { channels = [] }
            return channels
        }
        for listener in listeners {
            try? await listener.close()
        }
        await self.stopAccepting()
    }
}
