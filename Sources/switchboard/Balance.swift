import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import SwitchboardBalancer
import SwitchboardServer

/// `switchboard balance`: a WebSocket-aware load balancer in front of `switchboard serve` nodes.
struct Balance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the load balancer in front of Switchboard nodes.",
        discussion: """
            Reads each client's HTTP request head (at most 16 KB, 100 lines, within --header-timeout) to \
            pick a node, then copies bytes both ways: WebSocket, SSE, long-poll and the HTTP API alike. \
            Nodes are checked with GET /readyz. Options come from flags, then SWITCHBOARD_BALANCE_* \
            environment variables (SWITCHBOARD_BALANCE_NODES="127.0.0.1:8001 127.0.0.1:8002", ...), then \
            the config file (--config, JSON or YAML), then defaults. SIGHUP re-reads them without touching \
            open tunnels; a bad configuration is refused and the running one stays. See docs/balancer.md.
            """
    )

    @Option(help: "Config file, JSON or YAML (also SWITCHBOARD_BALANCE_CONFIG); SIGHUP re-reads it.")
    var config: String?

    @Option(help: "HOST:PORT for clients; port 0 picks a free one (default 127.0.0.1:8080).")
    var listen: String?

    @Option(help: "A node, HOST:PORT or HOST:PORT,weight=N (1-100); repeat for each node.")
    var node: [String] = []

    @Option(help: "redis://[[user]:password@]host:port[/db] (or rediss:// for TLS, redis+cluster://host:port[,...] for a Redis Cluster) of the nodes' broker: nodes announced in its registry are added and removed at run time.")
    var registry: String?

    @Option(help: "round-robin, least-conn, p2c, least-time or hash (default p2c).")
    var algorithm: String?

    @Option(help: "What hash hashes: channel (query parameter), user (JWT sub, unverified) or client (address).")
    var hashKey: String?

    @Option(help: "Bounded load for hash, in percent of the mean (default 125).")
    var hashBalanceFactor: String?

    @Option(help: "Spread of the nodes' connections per weight (max over min, in percent) above which round-robin, p2c and least-time pick by least connections until it is back to 110 (default 125).")
    var rebalanceSpread: String?

    @Option(help: "HOST:PORT for GET /admin/nodes and /metrics (default: no admin listener).")
    var admin: String?

    @Option(help: "File holding the nodes' API key: POST /admin/rebalance then also asks every available node to rebalance now (POST /api/rebalance). Re-read on SIGHUP.")
    var nodeApiKeyFile: String?

    @Option(help: "PEM certificate chain (RSA or ECDSA) for TLS on --listen; needs --tls-key. TLS 1.2 and 1.3, ALPN http/1.1. Re-read on SIGHUP.")
    var tlsCert: String?

    @Option(help: "PEM private key for --tls-cert.")
    var tlsKey: String?

    @Option(help: "x-forwarded-for (default) or proxy-protocol (PROXY v2): how nodes learn the client address.")
    var forwardClientAddress: String?

    @Option(help: "Client connections at once; more are answered 503 (default 9900).")
    var maxConnections: String?

    @Option(help: "Seconds for a complete request head, however slowly it arrives (default 5); then 408.")
    var headerTimeout: String?

    @Option(help: "Seconds for each connect to a node (default 3).")
    var connectTimeout: String?

    @Option(help: "Seconds for the node's first byte once the request is sent to it (default 75); then 504.")
    var responseTimeout: String?

    @Option(help: "Seconds without a byte either way before a tunnel is closed (default 3600).")
    var tunnelIdleTimeout: String?

    @Option(help: "Seconds between health checks of each node, jittered ±10% (default 1).")
    var checkInterval: String?

    @Option(help: "Seconds each health check may take before it counts as failed (default 2).")
    var checkTimeout: String?

    @Flag(help: "Check nodes with a WebSocket upgrade on /ws and a ping instead of GET /readyz.")
    var checkWebsocket = false

    @Option(help: "Good checks in a row that bring a node back (default 2).")
    var rise: String?

    @Option(help: "Failed checks in a row that take a node out (default 2).")
    var fall: String?

    @Option(help: "Seconds SIGTERM waits for open tunnels to end after closing the listener (default 10); a second signal exits at once.")
    var drainSeconds: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String?

    @Option(help: "Event loop threads; 0 = one per core (default 0).")
    var threads: String?

    func run() async throws {
        let configuration: BalancerConfiguration
        do {
            configuration = try Self.load(self.givenFlags)
        } catch {
            throw ValidationError("\(error)")
        }
        let level = Logger.Level(rawValue: configuration.logLevel.lowercased()) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "switchboard.balancer")
        let threads = configuration.eventLoopThreads
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads == 0 ? UsableCores.count() : threads)
        let server: BalancerServer
        do {
            server = try BalancerServer(configuration: configuration, group: group, logger: logger)
        } catch {
            throw ValidationError("\(error)")
        }
        // Signal handling first: libdispatch opens its own descriptors for it, and tests measure the
        // process's descriptors from the moment the listening line appears.
        let signals = SignalDrain.signalStream()
        let hangups = Self.reloadOnHangup(server: server, flags: self.givenFlags, logger: logger)
        try ListenPortCheck.ensureFree(host: configuration.host, port: configuration.port, option: "--listen")
        let (port, adminPort) = try await server.start()
        let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
        let (ws, http) = configuration.tlsCertificatePath == nil ? ("ws", "http") : ("wss", "https")
        var line = "switchboard balancer listening: \(ws)://\(host):\(port)/ws  \(http)://\(host):\(port)/"
        if let adminPort, let adminHost = configuration.adminHost {
            let shown = adminHost.contains(":") ? "[\(adminHost)]" : adminHost
            line += "  admin http://\(shown):\(adminPort)/admin/nodes"
        }
        line += "  nodes \(configuration.nodes.map(\.description).joined(separator: " ")) algorithm \(configuration.algorithm.rawValue)\n"
        FileHandle.standardOutput.write(Data(line.utf8))
        // The first SIGTERM/SIGINT starts a drain: stop accepting, let open tunnels finish within the
        // window. A second one exits at once.
        let (firstSignal, firstContinuation) = AsyncStream<Void>.makeStream()
        let signalStream = signals.stream
        let watcher = Task {
            var count = 0
            for await _ in signalStream {
                count += 1
                if count == 1 {
                    firstContinuation.yield(())
                } else {
                    logger.warning("second signal, exiting now")
                    Foundation.exit(1)
                }
            }
        }
        var iterator = firstSignal.makeAsyncIterator()
        _ = await iterator.next()
        let drainSeconds = server.current.drainSeconds
        logger.info("signal received, draining", metadata: ["seconds": "\(drainSeconds)", "clients": "\(server.openClients)"])
        await server.stopAccepting()
        let deadline = ContinuousClock.now + .milliseconds(Int64(drainSeconds * 1000))
        while server.openClients > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
        }
        logger.info("drained, stopping", metadata: ["clients left": "\(server.openClients)"])
        watcher.cancel()
        withExtendedLifetime(signals.sources) {}
        withExtendedLifetime(hangups) {}
        await server.stop()
        try? await group.shutdownGracefully()
    }

    /// What was given on the command line, kept for SIGHUP reloads.
    struct GivenFlags: Sendable {
        var config: String?
        var values: [(key: String, value: String)]
        var nodes: [String]
    }

    var givenFlags: GivenFlags {
        let flags: [(String, String?)] = [
            ("listen", self.listen), ("registry", self.registry), ("algorithm", self.algorithm),
            ("hashKey", self.hashKey), ("hashBalanceFactor", self.hashBalanceFactor), ("admin", self.admin),
            ("rebalanceSpread", self.rebalanceSpread), ("nodeApiKeyFile", self.nodeApiKeyFile),
            ("tlsCert", self.tlsCert), ("tlsKey", self.tlsKey), ("forwardClientAddress", self.forwardClientAddress),
            ("maxConnections", self.maxConnections), ("headerTimeout", self.headerTimeout),
            ("connectTimeout", self.connectTimeout), ("responseTimeout", self.responseTimeout),
            ("tunnelIdleTimeout", self.tunnelIdleTimeout),
            ("checkInterval", self.checkInterval), ("checkTimeout", self.checkTimeout), ("rise", self.rise),
            ("fall", self.fall), ("drainSeconds", self.drainSeconds), ("logLevel", self.logLevel),
            ("threads", self.threads),
        ]
        var values = flags.compactMap { key, value in value.map { (key: key, value: $0) } }
        if self.checkWebsocket { values.append((key: "checkWebSocket", value: "true")) }
        return GivenFlags(config: self.config, values: values, nodes: self.node)
    }

    /// Defaults, then the config file, then `SWITCHBOARD_BALANCE_*`, then flags (the same precedence as
    /// `serve`; the file is read with `serve`'s reader). Run again on SIGHUP.
    static func load(_ flags: GivenFlags) throws -> BalancerConfiguration {
        var c = BalancerConfiguration()
        let environment = ProcessInfo.processInfo.environment
        if let path = flags.config ?? environment[BalancerConfiguration.environmentPrefix + "CONFIG"] {
            try c.apply(file: ServerConfiguration.loadFile(path))
        }
        try c.apply(environment: environment)
        for (key, value) in flags.values {
            try c.set(key, text: value)
        }
        if !flags.nodes.isEmpty {
            c.nodes = try flags.nodes.map { text throws(BalancerConfigurationError) in try BackendNode.parse(text) }
        }
        try c.validate()
        return c
    }

    /// SIGHUP: load the configuration again and hand it to the server. A configuration that fails to
    /// load or apply is logged and the running one stays. The returned source must be kept alive.
    static func reloadOnHangup(server: BalancerServer, flags: GivenFlags, logger: Logger) -> any DispatchSourceSignal {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "switchboard.balancer.reload"))
        source.setEventHandler {
            let loaded: BalancerConfiguration
            do {
                loaded = try Self.load(flags)
            } catch {
                server.router.countReload(applied: false)
                logger.error("reload refused, the running configuration stays", metadata: ["error": "\(error)"])
                return
            }
            do {
                let ignored = try server.reload(loaded)
                let current = server.current
                logger.notice(
                    "configuration reloaded",
                    metadata: [
                        "nodes": "\(current.nodes.map(\.description).joined(separator: " "))",
                        "algorithm": "\(current.algorithm.rawValue)",
                    ])
                if !ignored.isEmpty {
                    logger.warning(
                        "reload: these options apply only at start; their running values are kept",
                        metadata: ["options": "\(ignored.joined(separator: " "))"])
                }
            } catch {
                logger.error("reload refused, the running configuration stays", metadata: ["error": "\(error)"])
            }
        }
        source.resume()
        return source
    }
}
