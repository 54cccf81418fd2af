import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import SwitchboardBalancer

/// `switchboard balance`: a WebSocket-aware load balancer in front of `switchboard serve` nodes.
struct Balance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the load balancer in front of Switchboard nodes.",
        discussion: """
            Reads each client's HTTP request head (at most 16 KB, 100 lines, within --header-timeout) to \
            pick a node, then copies bytes both ways: WebSocket, SSE, long-poll and the HTTP API alike. \
            Nodes are checked with GET /readyz. See docs/balancer.md.
            """
    )

    @Option(help: "HOST:PORT for clients; port 0 picks a free one (default 127.0.0.1:8080).")
    var listen: String = "127.0.0.1:8080"

    @Option(help: "A node, HOST:PORT or HOST:PORT,weight=N (1-100); repeat for each node.")
    var node: [String] = []

    @Option(help: "redis://[[user]:password@]host:port[/db] of the nodes' broker: nodes announced in its registry are added and removed at run time.")
    var registry: String?

    @Option(help: "round-robin, least-conn, p2c, least-time or hash (default p2c).")
    var algorithm: String = "p2c"

    @Option(help: "What hash hashes: channel (query parameter), user (JWT sub, unverified) or client (address).")
    var hashKey: String = "channel"

    @Option(help: "Bounded load for hash, in percent of the mean (default 125).")
    var hashBalanceFactor: Double = 125

    @Option(help: "HOST:PORT for GET /admin/nodes and /metrics (default: no admin listener).")
    var admin: String?

    @Option(help: "PEM certificate chain (RSA or ECDSA) for TLS on --listen; needs --tls-key. TLS 1.2 and 1.3, ALPN http/1.1.")
    var tlsCert: String?

    @Option(help: "PEM private key for --tls-cert.")
    var tlsKey: String?

    @Option(help: "Client connections at once; more are answered 503 (default 9900).")
    var maxConnections: Int = 9900

    @Option(help: "Seconds for a complete request head, however slowly it arrives (default 5); then 408.")
    var headerTimeout: String = "5"

    @Option(help: "Seconds for each connect to a node (default 3).")
    var connectTimeout: String = "3"

    @Option(help: "Seconds without a byte either way before a tunnel is closed (default 3600).")
    var tunnelIdleTimeout: String = "3600"

    @Option(help: "Seconds between health checks of each node, jittered ±10% (default 1).")
    var checkInterval: String = "1"

    @Option(help: "Seconds each health check may take before it counts as failed (default 2).")
    var checkTimeout: String = "2"

    @Option(help: "Good checks in a row that bring a node back (default 2).")
    var rise: Int = 2

    @Option(help: "Failed checks in a row that take a node out (default 2).")
    var fall: Int = 2

    @Option(help: "Seconds SIGTERM waits for open tunnels to end after closing the listener (default 10); a second signal exits at once.")
    var drainSeconds: Double = 10

    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String = "info"

    @Option(help: "Event loop threads; 0 = one per core (default 0).")
    var threads: Int = 0

    func run() async throws {
        let configuration = try self.makeConfiguration()
        guard let level = Logger.Level(rawValue: self.logLevel.lowercased()) else {
            throw ValidationError("unknown log level \(self.logLevel)")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "switchboard.balancer")
        guard (0...256).contains(self.threads) else { throw ValidationError("--threads must be within 0-256") }
        let group = MultiThreadedEventLoopGroup(
            numberOfThreads: self.threads == 0 ? System.coreCount : self.threads)
        let server: BalancerServer
        do {
            server = try BalancerServer(configuration: configuration, group: group, logger: logger)
        } catch {
            throw ValidationError("\(error)")
        }
        // Signal handling first: libdispatch opens its own descriptors for it, and tests measure the
        // process's descriptors from the moment the listening line appears.
        let signals = SignalDrain.signalStream()
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
        logger.info("signal received, draining", metadata: ["seconds": "\(self.drainSeconds)", "clients": "\(server.openClients)"])
        await server.stopAccepting()
        let deadline = ContinuousClock.now + .milliseconds(Int64(self.drainSeconds * 1000))
        while server.openClients > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
        }
        logger.info("drained, stopping", metadata: ["clients left": "\(server.openClients)"])
        watcher.cancel()
        withExtendedLifetime(signals.sources) {}
        await server.stop()
        try? await group.shutdownGracefully()
    }

    private func makeConfiguration() throws -> BalancerConfiguration {
        var c = BalancerConfiguration()
        (c.host, c.port) = try Self.hostPort(self.listen, option: "--listen")
        do {
            c.nodes = try self.node.map { try BackendNode.parse($0) }
        } catch {
            throw ValidationError("--node: \(error)")
        }
        c.registry = self.registry
        c.tlsCertificatePath = self.tlsCert
        c.tlsKeyPath = self.tlsKey
        guard let algorithm = BalancingAlgorithm(rawValue: self.algorithm) else {
            throw ValidationError("--algorithm must be one of \(BalancingAlgorithm.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        c.algorithm = algorithm
        guard let hashKey = HashKeySource(rawValue: self.hashKey) else {
            throw ValidationError("--hash-key must be channel, user or client")
        }
        c.hashKey = hashKey
        c.hashBalanceFactor = self.hashBalanceFactor / 100
        if let admin = self.admin {
            let (host, port) = try Self.hostPort(admin, option: "--admin")
            c.adminHost = host
            c.adminPort = port
        }
        c.maxConnections = self.maxConnections
        c.headerTimeout = try Self.seconds(self.headerTimeout, option: "--header-timeout")
        c.connectTimeout = try Self.seconds(self.connectTimeout, option: "--connect-timeout")
        c.tunnelIdleTimeout = try Self.seconds(self.tunnelIdleTimeout, option: "--tunnel-idle-timeout")
        c.checkInterval = try Self.seconds(self.checkInterval, option: "--check-interval")
        c.checkTimeout = try Self.seconds(self.checkTimeout, option: "--check-timeout")
        guard self.drainSeconds.isFinite, (0...86_400).contains(self.drainSeconds) else {
            throw ValidationError("--drain-seconds must be within 0-86400")
        }
        c.rise = self.rise
        c.fall = self.fall
        do {
            try c.validate()
        } catch {
            throw ValidationError("\(error)")
        }
        return c
    }

    private static func hostPort(_ text: String, option: String) throws -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { throw ValidationError("\(option) expects HOST:PORT with a port within 0-65535") }
        var host = text[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw ValidationError("\(option) expects HOST:PORT") }
        return (String(host), port)
    }

    private static func seconds(_ text: String, option: String) throws -> TimeAmount {
        guard let value = BalancerConfiguration.seconds(text) else {
            throw ValidationError("\(option) expects a positive number of seconds up to 86400")
        }
        return value
    }
}
