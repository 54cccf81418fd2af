public import SwitchboardAuth
public import SwitchboardCore

/// Everything a node needs to know to run; built from flags, environment and a config file.
public struct ServerConfiguration: Sendable, Hashable {
    /// Address to bind.
    public var host: String = "127.0.0.1"
    /// Port to bind; 0 picks a free one.
    public var port: Int = 8000
    /// `memory` (one node) or `redis://[[user]:password@]host:port[/db]` (many nodes).
    public var broker: String = "memory"
    /// Key for the HTTP server API (`Authorization: apikey <key>`).
    public var apiKey: String = ""
    /// HS256 secret for client tokens (one key without `kid`, kept for old configs); nil: none.
    public var tokenSecret: String?
    /// Token keys and claim rules (`tokens` in the config file). With no key here and no
    /// `tokenSecret`, the node runs in insecure dev mode.
    public var tokens: TokenSettings = TokenSettings()
    /// `Origin` patterns a browser page may connect from (`https://*.example.com`); empty: the
    /// node's own origin only; `["*"]`: any (with a warning).
    public var allowedOrigins: [String] = []
    /// Limits that need identity (`limits` in the config file).
    public var limits: ClientLimits = ClientLimits()
    /// Allows dev mode (no token key) on an address other than loopback.
    public var insecure: Bool = false
    /// Seconds over which a draining node spreads its clients' disconnects.
    public var drainSeconds: Double = 10
    /// Serve `/echo` for WebSocket conformance runs.
    public var echoEndpoint: Bool = false
    /// Largest client message in bytes (WebSocket message after joining fragments).
    public var maxMessageSize: Int = 65_536
    /// Largest message on the echo endpoint (the Autobahn suite sends up to 16 MiB).
    public var echoMaxMessageSize: Int = 16 * 1_048_576 + 1024
    /// Largest HTTP API request body in bytes.
    public var maxRequestBodySize: Int = 1_048_576
    /// Subscriptions allowed per connection.
    public var maxSubscriptions: Int = 128
    /// Outbound bytes queued for one connection before it is a slow consumer (3004).
    public var outboundLimit: Int = 1_048_576
    /// Seconds of outbound silence before a server ping; 0 disables pings.
    public var pingInterval: Double = 25
    /// Seconds to wait for the answer to a ping.
    public var pongTimeout: Double = 10
    /// Seconds a connection has to send a complete request head, however slowly it trickles
    /// (counted from the accept, or from the end of the previous response on a kept-alive connection).
    public var headTimeout: Double = 10
    /// Seconds a request has, from its head, to send its complete body.
    public var requestTimeout: Double = 30
    /// Connections this node holds at once; 0 = what the open-files limit allows less a reserve.
    public var maxConnections: Int = 0
    /// Connections one client address may hold at once.
    public var maxConnectionsPerIP: Int = 1000
    /// Addresses or CIDR blocks of proxies in front of the node (HAProxy, nginx, `switchboard balance`).
    /// Only their connections may name the client (PROXY protocol v2 header or `X-Forwarded-For` in the
    /// first request head); the per-address caps then count that client. Their connections that name
    /// no client are not held to the per-address caps.
    public var trustedProxies: [String] = []
    /// PEM certificate chain and private key: with both, the node speaks TLS (1.2 and 1.3, ALPN
    /// `http/1.1`) on its port, for every transport; SIGHUP reads them again.
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?
    /// Port of the HAProxy `agent-check` listener on `host` (answers `drain` or `up N%`); 0 = none.
    public var haproxyAgentPort: Int = 0
    /// This node's share of new connections against other nodes (1-100), announced in the registry:
    /// `switchboard balance --registry` weighs the node by it (a machine twice the size: twice the weight).
    public var weight: Int = 1
    /// Largest `weight`.
    public static let maximumWeight = 100
    /// Announced in the registry in place of the bound address (`--advertise HOST[:PORT]`); nil: the
    /// bound address. See ``AdvertisedAddress``.
    public var advertise: AdvertisedAddress?
    /// Long-polls one client address may have waiting at once.
    public var maxPollsPerIP: Int = 16
    /// Commands in one `/rpc` or SSE `POST` body.
    public var maxCommandsPerRequest: Int = 100
    /// Most publications one `history` answer holds (a larger or missing `limit` is clamped to it).
    public var maxHistoryLimit: Int = 1000
    /// Log level: trace, debug, info, notice, warning, error, critical.
    public var logLevel: String = "info"
    /// Node name shown in `info`; random when empty.
    public var nodeName: String = ""
    /// Threads for connections; 0 = one per core.
    public var eventLoopThreads: Int = 0
    /// Channel options by namespace.
    public var namespaces: NamespaceTable = NamespaceTable()
    /// Seconds a presence entry lives without a refresh.
    public var presenceTTL: Double = 60
    /// Seconds an idempotency key is remembered.
    public var idempotencyWindow: Double = 300

    /// Node-side rebalancing after scale-out (docs/balancer.md): ask clients to move (close 3002) when
    /// this node holds more than (1 + `rebalanceTolerance`) × the mean of the ready nodes.
    public var rebalance: Bool = true
    /// ε of the rebalancing rule.
    public var rebalanceTolerance: Double = 0.10
    /// Seconds the node must stay over the tolerance before it asks clients to move.
    public var rebalanceHold: Double = 10
    /// Seconds one round's requests are spread over.
    public var rebalanceWindow: Double = 30
    /// Most clients asked to move per second.
    public var rebalanceRate: Double = 200
    /// Seconds a connection must have been on this node before it may be asked to move: a client
    /// that moved (or arrived) more recently than this stays where it is.
    public var rebalanceMinAge: Double = 600

    public init() {}

    /// Whether any token key is configured; if not, the node runs in insecure dev mode
    /// (anonymous connect, everything allowed).
    public var hasTokenKeys: Bool { self.tokenSecret != nil || self.tokens.hasKeys }
}

extension ServerConfiguration: CustomStringConvertible {
    /// Safe to log: the API key, token secrets and broker passwords are redacted.
    public var description: String {
        "ServerConfiguration(host: \(self.host), port: \(self.port), broker: \(SecretRedaction.url(self.broker)), "
            + "apiKey: \(self.apiKey.isEmpty ? "none" : "<redacted>"), tokenSecret: \(self.tokenSecret == nil ? "none" : "<redacted>"), "
            + "tokens: \(self.tokens), allowedOrigins: \(self.allowedOrigins), insecure: \(self.insecure))"
    }
}
