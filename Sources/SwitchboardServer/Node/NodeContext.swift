import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// What every session and handler of a node shares: configuration, the hub,
/// the broker and the per-loop fan-outs. Immutable after start, except the
/// draining flag.
final class NodeContext: Sendable {
    let configuration: ServerConfiguration
    let nodeID: String
    let nodeName: String
    /// The release version reported in `connect` results.
    var version: String { SwitchboardVersion.current }
    let hub: Hub
    let broker: any Broker
    let fanouts: [LoopFanout]
    let tokenVerifier: TokenVerifier?
    let logger: Logger
    let metrics: NodeMetrics
    let startedAt: NIODeadline
    let connections: ConnectionLimiter
    private let drainingBox = NIOLockedValueBox(false)
    /// Polls waiting now, by `client` field and by client address (entries leave at zero, so
    /// both tables are bounded by the connections the node holds).
    private let polls = NIOLockedValueBox(PollCounts())

    private struct PollCounts {
        var byClient: [String: Int] = [:]
        var byAddress: [String: Int] = [:]
    }

    /// Polls one client may have waiting on this node at once.
    static let maximumPollsPerClient = 2

    init(
        configuration: ServerConfiguration,
        nodeID: String,
        nodeName: String,
        hub: Hub,
        broker: any Broker,
        fanouts: [LoopFanout],
        metrics: NodeMetrics = NodeMetrics(),
        logger: Logger
    ) {
        self.metrics = metrics
        self.configuration = configuration
        self.nodeID = nodeID
        self.nodeName = nodeName
        self.hub = hub
        self.broker = broker
        self.fanouts = fanouts
        self.tokenVerifier = configuration.tokenSecret.map { TokenVerifier(secret: $0) }
        self.logger = logger
        self.startedAt = .now()
        self.connections = ConnectionLimiter(
            maximum: configuration.maxConnections > 0 ? configuration.maxConnections : ConnectionLimiter.defaultMaximum(),
            maximumPerAddress: configuration.maxConnectionsPerIP
        )
    }

    /// Counts a poll of `client` (may be empty) from `address`; nil when counted, else why not
    /// (and nothing counted). `endPoll` with the same keys must follow.
    func beginPoll(client: String, address: String) -> String? {
        let perAddress = self.configuration.trustedProxies.contains(address) ? Int.max : self.configuration.maxPollsPerIP
        return self.polls.withLockedValue { polls in
            let byAddress = polls.byAddress[address, default: 0]
            guard byAddress < perAddress else { return "at most \(perAddress) polls at once per client address" }
            if !client.isEmpty {
                let byClient = polls.byClient[client, default: 0]
                guard byClient < Self.maximumPollsPerClient else { return "at most \(Self.maximumPollsPerClient) polls at once per client" }
                polls.byClient[client] = byClient + 1
            }
            polls.byAddress[address] = byAddress + 1
            return nil
        }
    }

    func endPoll(client: String, address: String) {
        self.polls.withLockedValue { polls in
            if !client.isEmpty, let count = polls.byClient[client] {
                polls.byClient[client] = count > 1 ? count - 1 : nil
            }
            if let count = polls.byAddress[address] {
                polls.byAddress[address] = count > 1 ? count - 1 : nil
            }
        }
    }

    var isDraining: Bool {
        get { self.drainingBox.withLockedValue { $0 } }
    }

    func setDraining() {
        self.drainingBox.withLockedValue { $0 = true }
        self.metrics.draining.record(1)
    }

    /// The address other nodes and balancers reach this node at (set once bound).
    var advertisedAddress: String {
        get { self.addressBox.withLockedValue { $0 } }
        set { self.addressBox.withLockedValue { $0 = newValue } }
    }
    private let addressBox = NIOLockedValueBox("")

    /// How often a node refreshes its registry entry.
    static let announceInterval: TimeAmount = .seconds(2)
    /// Seconds a node stays in the registry without a refresh (three missed refreshes).
    static let registryTTL: Double = 6

    /// Writes this node's current figures to the broker's registry, for `registryTTL` seconds.
    func announceSelf() -> EventLoopFuture<Void> {
        self.hub.statistics().flatMap { stats in
            let info = NodeInfo(
                id: self.nodeID,
                name: self.nodeName,
                address: self.advertisedAddress,
                connections: stats.connections,
                subscriptions: stats.subscriptions,
                channels: stats.channels,
                uptime: Double((NIODeadline.now() - self.startedAt).nanoseconds) / 1e9,
                draining: self.isDraining
            )
            return self.broker.announce(info, ttl: Self.registryTTL)
        }
    }

    /// The fan-out of the loop a channel runs on.
    func fanout(for eventLoop: any EventLoop) -> LoopFanout {
        for fanout in self.fanouts where fanout.eventLoop === eventLoop { return fanout }
        preconditionFailure("event loop outside the node's group")
    }
}
