import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals
import SwitchboardCore
import SwitchboardServer

/// `switchboard serve`: run one node.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Switchboard node.",
        discussion: """
            Options come from flags, then SWITCHBOARD_* environment variables (SWITCHBOARD_PORT, \
            SWITCHBOARD_API_KEY, ...), then the config file (--config, JSON or YAML), then defaults: \
            a flag beats the environment, which beats the file. Namespaces (per channel-name prefix \
            such as "chat:") are set in the config file. Without one, every channel keeps 100 \
            publications for 5 minutes, has presence and join/leave, and connected clients may publish.
            """
    )

    @Option(help: "Address to bind (default 127.0.0.1).")
    var host: String?

    @Option(help: "Port to bind; 0 picks a free port (default 8000).")
    var port: Int?

    @Option(help: "Config file, JSON or YAML (also SWITCHBOARD_CONFIG).")
    var config: String?

    @Option(help: "memory (one node, the default), or redis://[[user]:password@]host:port[/db] to join nodes through Redis (rediss:// for TLS, with ?ssl_ca_certs=FILE, &ssl_certfile=FILE&ssl_keyfile=FILE), or redis+cluster://host:port[,host:port...] for a Redis Cluster (rediss+cluster:// with TLS).")
    var broker: String?

    @Option(help: "Key for the HTTP server API; generated and printed when not set.")
    var apiKey: String?

    @Option(help: "Read the API key from this file (keeps it out of ps and the environment).")
    var apiKeyFile: String?

    @Option(help: "HS256 secret (at least 32 bytes) that client tokens are signed with; more keys, RSA, EC and JWKS in the config file (docs/security.md). Without any key the node runs in insecure dev mode.")
    var tokenSecret: String?

    @Option(help: "Read the HS256 token secret from this file.")
    var tokenSecretFile: String?

    @Option(help: "Origin a browser page may connect from, such as https://app.example or https://*.example.com (repeatable; default: the node's own origin only).")
    var allowedOrigin: [String] = []

    @Option(help: "Commands per second one connection may send (token bucket; default \(Int(ClientLimits().commandsPerSecond))). Over it: error 111; more than 20 refusals in 5 s close with 3507. Benchmarks that drive one connection harder lift it.")
    var commandsPerSecond: Double?

    @Option(help: "Commands one connection may send in a burst (default \(Int(ClientLimits().commandBurst))).")
    var commandBurst: Double?

    @Option(help: "History bytes one client address may read per second, in history answers and recoveries (default \(Int(ClientLimits().historyBytesPerSecond))). Over it: error 111, or 429 for a poll.")
    var historyBytesPerSecond: Double?

    @Option(help: "History bytes one client address may read in a burst (default \(Int(ClientLimits().historyBurstBytes))).")
    var historyBurstBytes: Double?

    @Flag(help: "Allow insecure dev mode (no token key: anyone may use any channel) on an address other than loopback.")
    var insecure = false

    @Option(help: "Seconds over which SIGTERM spreads client disconnects before exiting (default 10).")
    var drainSeconds: Double?

    @Flag(help: "Serve a WebSocket echo endpoint at /echo (conformance testing; off by default).")
    var echoEndpoint = false

    @Option(help: "Largest client message in bytes (default 65536); larger ones close with 1009.")
    var maxMessageSize: Int?

    @Option(help: "Subscriptions per connection (default 128).")
    var maxSubscriptions: Int?

    @Option(help: "Outbound bytes queued per connection before it is dropped as a slow consumer (default 1048576).")
    var outboundLimit: Int?

    @Option(help: "Seconds of silence before the server pings a client; 0 disables (default 25).")
    var pingInterval: Double?

    @Option(help: "Seconds a client has to answer a ping (default 10).")
    var pongTimeout: Double?

    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String?

    @Option(help: "Name shown for this node in /api/info (default: its id).")
    var nodeName: String?

    @Option(help: "Event loop threads; 0 = one per core (default 0).")
    var threads: Int?

    @Option(help: "Seconds a connection has to send a complete request head, however slowly (default 10).")
    var headTimeout: Double?

    @Option(help: "Seconds a request has, from its head, to send its complete body (default 30).")
    var requestTimeout: Double?

    @Option(help: "Connections this node holds at once; 0 = the open-files limit less 100 (default 0).")
    var maxConnections: Int?

    @Option(help: "Connections one client address may hold at once (default 1000).")
    var maxConnectionsPerIp: Int?

    @Option(help: "Address or CIDR block of a proxy in front of the node (repeatable; comma-separated in SWITCHBOARD_TRUSTED_PROXIES): only its connections may name the client (PROXY protocol v2 or X-Forwarded-For), and the per-address caps then count that client.")
    var trustedProxy: [String] = []

    @Option(help: "PEM certificate chain: with --tls-key the node speaks TLS 1.2/1.3 (https, wss) on its port; SIGHUP reads both files again.")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(help: "Port on --host for HAProxy's agent-check: answers drain, or up and the free share of --max-connections (default: none).")
    var haproxyAgentPort: Int?

    @Option(help: "This node's share of new connections against other nodes, 1-100 (default 1), announced in the registry: `switchboard balance --registry` weighs the node by it, lowered as the node fills up.")
    var weight: Int?

    @Option(help: "The address announced in the registry, HOST or HOST:PORT (an IP address or a host name balancers resolve; default: the bound address and port). For a node bound to 0.0.0.0 or behind NAT.")
    var advertise: String?

    @Option(help: "Long-polls one client address may have waiting at once (default 16).")
    var maxPollsPerIp: Int?

    @Option(help: "Commands in one /rpc or SSE POST body (default 100).")
    var maxCommandsPerRequest: Int?

    @Option(help: "Most publications one history answer holds (default 1000).")
    var maxHistoryLimit: Int?

    @Flag(inversion: .prefixedNo, help: "Ask clients to move (close 3002) when this node holds more than (1 + tolerance) x the ready nodes' mean after scale-out (default on).")
    var rebalance: Bool?

    @Option(help: "Tolerance of rebalancing: a node is over when it holds more than (1 + this) x the mean (default 0.10).")
    var rebalanceTolerance: Double?

    @Option(help: "Seconds a node must stay over before it asks clients to move (default 10).")
    var rebalanceHold: Double?

    @Option(help: "Seconds one rebalancing round spreads its requests over (default 30).")
    var rebalanceWindow: Double?

    @Option(help: "Most clients asked to move per second (default 200).")
    var rebalanceRate: Double?

    @Option(help: "Seconds a client must have been on this node before it may be asked to move (default 600).")
    var rebalanceMinAge: Double?

    func run() async throws {
        var configuration = ServerConfiguration()
        let environment = ProcessInfo.processInfo.environment
        let configPath = self.config ?? environment["SWITCHBOARD_CONFIG"]
        do {
            if let configPath {
                let directory = URL(fileURLWithPath: configPath).deletingLastPathComponent().path
                try configuration.apply(file: ServerConfiguration.loadFile(configPath), directory: directory)
            }
            try configuration.apply(environment: environment)
            try self.applyFlags(to: &configuration)
        } catch {
            throw ValidationError("\(error)")
        }
        var generatedKey = false
        if configuration.apiKey.isEmpty {
            configuration.apiKey = Self.randomKey()
            generatedKey = true
        }
        guard let level = Logger.Level(rawValue: configuration.logLevel.lowercased()) else {
            throw ValidationError("unknown log level \(configuration.logLevel)")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "switchboard")
        // Signals are trapped before the node says it listens: a supervisor (or a test) may send
        // SIGTERM the moment the line appears. The group's own signal handling was installed only
        // inside `run()`, after the line, and a signal in between reached this process's second-signal
        // counter but not the group: the node ignored it and cut its drain short at the next one.
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let hangups = await UnixSignalsSequence(trapping: .sighup)

        let node = try SwitchboardNode(
            configuration: configuration, logger: logger,
            makeBroker: BrokerChoice.factory(for: configuration.broker, logger: logger))
        try ListenPortCheck.ensureFree(host: configuration.host, port: configuration.port, option: "--port")
        let port = try await node.start()
        let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
        let (http, ws) = node.usesTLS ? ("https", "wss") : ("http", "ws")
        let line = "switchboard node \(node.nodeID) listening: demo \(http)://\(host):\(port)/  websocket \(ws)://\(host):\(port)/ws\n"
        FileHandle.standardOutput.write(Data(line.utf8))
        if generatedKey {
            FileHandle.standardError.write(Data("api key: \(configuration.apiKey)\n".utf8))
        }
        // The first SIGTERM/SIGINT drains the node (the group's graceful shutdown, triggered below);
        // a second one cancels the group, which cuts the drain short.
        let services = ServiceGroup(configuration: ServiceGroupConfiguration(services: [node], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            // SIGHUP: the TLS certificate and key are read again; open connections keep theirs.
            group.addTask {
                for await _ in hangups {
                    guard node.usesTLS else {
                        logger.info("SIGHUP: nothing to reload (no --tls-cert)")
                        continue
                    }
                    do {
                        try node.reloadTLS()
                        logger.info("SIGHUP: TLS certificate and key reloaded")
                    } catch {
                        logger.error("SIGHUP: TLS reload failed, the previous certificate stays", metadata: ["error": "\(error)"])
                    }
                }
            }
            group.addTask {
                var caught = 0
                for await _ in signals {
                    caught += 1
                    if caught == 1 {
                        await services.triggerGracefulShutdown()
                    } else {
                        return
                    }
                }
            }
            // Whichever ends first (the drained group, or the second signal) cancels the others.
            try await group.next()
            group.cancelAll()
        }
        if node.drainWasCutShort {
            logger.warning("second signal: exited before the drain was over")
            Foundation.exit(1)
        }
    }

    private func applyFlags(to configuration: inout ServerConfiguration) throws {
        if let host { configuration.host = host }
        if let port {
            guard (0...65535).contains(port) else { throw ValidationError("--port must be within 0-65535") }
            configuration.port = port
        }
        if let apiKey { configuration.apiKey = apiKey }
        if let broker { configuration.broker = broker }
        if let tokenSecret { configuration.tokenSecret = tokenSecret.isEmpty ? nil : tokenSecret }
        if apiKey != nil, apiKeyFile != nil { throw ValidationError("give --api-key or --api-key-file, not both") }
        if tokenSecret != nil, tokenSecretFile != nil { throw ValidationError("give --token-secret or --token-secret-file, not both") }
        if let apiKeyFile { try configuration.set("apiKeyFile", .string(apiKeyFile)) }
        if let tokenSecretFile { try configuration.set("tokenSecretFile", .string(tokenSecretFile)) }
        if !allowedOrigin.isEmpty { try configuration.set("allowedOrigins", .list(allowedOrigin)) }
        if self.insecure { configuration.insecure = true }
        // The `limits` rates and bursts: from 1 to 1e9, as in the config file.
        func limit(_ value: Double?, _ option: String, _ field: WritableKeyPath<ClientLimits, Double>) throws {
            guard let value else { return }
            guard value >= 1, value <= 1e9 else { throw ValidationError("--\(option) must be from 1 to 1e9") }
            configuration.limits[keyPath: field] = value
        }
        try limit(commandsPerSecond, "commands-per-second", \.commandsPerSecond)
        try limit(commandBurst, "command-burst", \.commandBurst)
        try limit(historyBytesPerSecond, "history-bytes-per-second", \.historyBytesPerSecond)
        try limit(historyBurstBytes, "history-burst-bytes", \.historyBurstBytes)
        if let drainSeconds { try configuration.set("drainSeconds", .number(Double(drainSeconds))) }
        if self.echoEndpoint { configuration.echoEndpoint = true }
        if let maxMessageSize { try configuration.set("maxMessageSize", .number(Double(maxMessageSize))) }
        if let maxSubscriptions { try configuration.set("maxSubscriptions", .number(Double(maxSubscriptions))) }
        if let outboundLimit { try configuration.set("outboundLimit", .number(Double(outboundLimit))) }
        if let pingInterval { try configuration.set("pingInterval", .number(Double(pingInterval))) }
        if let pongTimeout { try configuration.set("pongTimeout", .number(Double(pongTimeout))) }
        if let logLevel { configuration.logLevel = logLevel }
        if let nodeName { configuration.nodeName = nodeName }
        if let threads { try configuration.set("eventLoopThreads", .number(Double(threads))) }
        if let headTimeout { try configuration.set("headTimeout", .number(Double(headTimeout))) }
        if let requestTimeout { try configuration.set("requestTimeout", .number(Double(requestTimeout))) }
        if let maxConnections { try configuration.set("maxConnections", .number(Double(maxConnections))) }
        if let maxConnectionsPerIp { try configuration.set("maxConnectionsPerIP", .number(Double(maxConnectionsPerIp))) }
        if !trustedProxy.isEmpty { try configuration.set("trustedProxies", .list(trustedProxy)) }
        if let haproxyAgentPort { try configuration.set("haproxyAgentPort", .number(Double(haproxyAgentPort))) }
        if let weight { try configuration.set("weight", .number(Double(weight))) }
        if let advertise { try configuration.set("advertise", .string(advertise)) }
        if let tlsCert { configuration.tlsCertificateFile = tlsCert }
        if let tlsKey { configuration.tlsKeyFile = tlsKey }
        if let maxPollsPerIp { try configuration.set("maxPollsPerIP", .number(Double(maxPollsPerIp))) }
        if let maxCommandsPerRequest { try configuration.set("maxCommandsPerRequest", .number(Double(maxCommandsPerRequest))) }
        if let maxHistoryLimit { try configuration.set("maxHistoryLimit", .number(Double(maxHistoryLimit))) }
        if let rebalance { try configuration.set("rebalance", .flag(rebalance)) }
        if let rebalanceTolerance { try configuration.set("rebalanceTolerance", .number(rebalanceTolerance)) }
        if let rebalanceHold { try configuration.set("rebalanceHold", .number(rebalanceHold)) }
        if let rebalanceWindow { try configuration.set("rebalanceWindow", .number(rebalanceWindow)) }
        if let rebalanceRate { try configuration.set("rebalanceRate", .number(rebalanceRate)) }
        if let rebalanceMinAge { try configuration.set("rebalanceMinAge", .number(rebalanceMinAge)) }
    }

    static func randomKey() -> String {
        RandomID.hex(bytes: 24)
    }
}
