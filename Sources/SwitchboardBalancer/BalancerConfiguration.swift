public import NIOCore

/// Everything `switchboard balance` can be told; the defaults are the issue's.
public struct BalancerConfiguration: Sendable {
    /// Address and port for clients (port 0 picks a free one).
    public var host = "127.0.0.1"
    public var port = 8080
    /// The static node list.
    public var nodes: [BackendNode] = []
    /// `redis://…` of the broker whose node registry adds nodes at run time; nil = static list only.
    public var registry: String?
    /// How often the registry is read.
    public var registryInterval = TimeAmount.seconds(1)
    public var algorithm = BalancingAlgorithm.powerOfTwoChoices
    public var hashKey = HashKeySource.channel
    /// Bounded-load factor for `hash` (1.25 = 125%).
    public var hashBalanceFactor = 1.25
    /// Spread of the nodes' connections per weight (max ÷ min, see `NodePicker.spread`) above which
    /// non-hash picks go by least connections (1.25 = 125%); see `NodePicker.rebalanceSpread`.
    public var rebalanceSpread = NodePicker.defaultRebalanceSpread
    /// Admin listener (`/admin/nodes`, `/metrics`); nil = none.
    public var adminHost: String?
    public var adminPort: Int?
    /// Client connections held at once; past it new ones get 503 and are closed. Two sockets per
    /// proxied connection under a 20,000 open-files limit: 9,900 by default.
    public var maxConnections = 9900
    /// Absolute deadline for a complete request head, however slowly it arrives (then 408).
    public var headerTimeout = TimeAmount.seconds(5)
    /// Deadline for each connect to a node.
    public var connectTimeout = TimeAmount.seconds(3)
    /// Deadline for the node's first byte once the request went to it (then 504, and the node is
    /// blamed like one that closed without answering). Above the longest long-poll a node holds (60 s).
    public var responseTimeout = TimeAmount.seconds(75)
    /// A tunnel with no byte either way for this long is closed on both sides.
    public var tunnelIdleTimeout = TimeAmount.seconds(3600)
    /// Active health check period (rounds jittered by ±10%), each check's timeout (a node whose check is
    /// still running is skipped by the next round), path and thresholds.
    public var checkInterval = TimeAmount.seconds(1)
    public var checkTimeout = TimeAmount.seconds(2)
    public var checkPath = "/readyz"
    /// Check with a WebSocket upgrade on `/ws` and a ping (the pong must come back) instead of
    /// `GET /readyz`: proves the node's WebSocket path, not only its HTTP one. A draining node refuses
    /// the upgrade, so it is taken out as with `/readyz`.
    public var checkWebSocket = false
    public var rise = 2
    public var fall = 2
    /// Connect attempts per client connection (one plus at most two retries on other nodes).
    public var connectAttempts = 3
    /// PEM certificate chain and private key (RSA or ECDSA) for TLS termination on the client listener;
    /// nil = plain. Nodes behind stay plain and learn the scheme from `X-Forwarded-Proto`.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// Scheme announced in `X-Forwarded-Proto`.
    public var forwardedProto: String { self.tlsCertificatePath == nil ? "http" : "https" }
    /// Write-buffer water marks on both sides of a tunnel: a side stops reading while the other side has
    /// more than `high` bytes queued, and resumes below `low`.
    public var writeBufferLowWaterMark = 32 * 1024
    public var writeBufferHighWaterMark = 64 * 1024

    /// Seconds SIGTERM waits for open tunnels after closing the listener.
    public var drainSeconds: Double = 10
    /// trace, debug, info, notice, warning, error or critical.
    public var logLevel = "info"
    /// Event loop threads; 0 = one per core.
    public var eventLoopThreads = 0
    /// How a node learns the client's address: `X-Forwarded-For`/`-Proto` headers or a PROXY protocol v2
    /// header in front of the forwarded bytes.
    public var clientAddressForwarding = ClientAddressForwarding.forwardedHeaders
    /// The nodes' API key (`--node-api-key-file`): with it, `POST /admin/rebalance` also asks every
    /// available node to rebalance now (`POST /api/rebalance`); without it, only the balancer's picks change.
    public var nodeAPIKey: NodeAPIKey?

    public init() {}

    /// Checks ranges; the message names the option.
    public func validate() throws(BalancerConfigurationError) {
        guard (0...65535).contains(self.port) else { throw BalancerConfigurationError("--listen: port must be within 0-65535") }
        if let adminPort = self.adminPort, !(0...65535).contains(adminPort) {
            throw BalancerConfigurationError("--admin: port must be within 0-65535")
        }
        guard !self.nodes.isEmpty || self.registry != nil else {
            throw BalancerConfigurationError("at least one --node HOST:PORT or a --registry is needed")
        }
        guard self.nodes.count <= 1000 else { throw BalancerConfigurationError("at most 1000 nodes") }
        guard self.hashBalanceFactor.isFinite, (1.0...10.0).contains(self.hashBalanceFactor) else {
            throw BalancerConfigurationError("--hash-balance-factor must be within 100%-1000%")
        }
        guard self.rebalanceSpread.isFinite, (1.01...10.0).contains(self.rebalanceSpread) else {
            throw BalancerConfigurationError("--rebalance-spread must be within 101%-1000%")
        }
        guard (1...1_000_000).contains(self.maxConnections) else {
            throw BalancerConfigurationError("--max-connections must be within 1-1000000")
        }
        for (name, value) in [
            ("--header-timeout", self.headerTimeout), ("--connect-timeout", self.connectTimeout),
            ("--response-timeout", self.responseTimeout),
            ("--tunnel-idle-timeout", self.tunnelIdleTimeout), ("--check-interval", self.checkInterval),
            ("--check-timeout", self.checkTimeout),
        ] where value <= .zero {
            throw BalancerConfigurationError("\(name) must be positive")
        }
        guard (self.tlsCertificatePath == nil) == (self.tlsKeyPath == nil) else {
            throw BalancerConfigurationError("--tls-cert and --tls-key go together")
        }
        guard (1...100).contains(self.rise), (1...100).contains(self.fall) else {
            throw BalancerConfigurationError("--rise and --fall must be within 1-100")
        }
        guard self.drainSeconds.isFinite, (0...86_400).contains(self.drainSeconds) else {
            throw BalancerConfigurationError("--drain-seconds must be within 0-86400")
        }
        guard (0...256).contains(self.eventLoopThreads) else { throw BalancerConfigurationError("--threads must be within 0-256") }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(self.logLevel.lowercased()) else {
            throw BalancerConfigurationError("unknown log level \(self.logLevel)")
        }
        guard self.writeBufferLowWaterMark > 0, self.writeBufferLowWaterMark <= self.writeBufferHighWaterMark else {
            throw BalancerConfigurationError("write-buffer water marks: 0 < low <= high")
        }
    }

    /// Parses a number of seconds (`5`, `0.5`) into a duration; nil unless finite, positive and at most a day.
    public static func seconds(_ text: String) -> TimeAmount? {
        guard let value = Double(text), value.isFinite, value > 0, value <= 86_400 else { return nil }
        return .nanoseconds(Int64(value * 1_000_000_000))
    }
}
