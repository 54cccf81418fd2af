#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CoreMetrics
import Prometheus
import SwitchboardCore

/// The node's Prometheus metrics, created once at start.
///
/// Every family carries help text (`promtool check metrics` accepts the
/// exposition); `/metrics` adds the standard `process_*` metrics
/// (``ProcessMetrics``) and `switchboard_build_info`.
///
/// The fan-out path never touches these directly: each event loop counts in
/// plain integers (`LoopCounters`) and adds its counts here once a second.
final class NodeMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    /// Sessions by transport, indexed by `TransportName.index` (a poll counts while it waits).
    let connections: [CoreMetrics.Gauge]
    let subscriptions: CoreMetrics.Gauge
    let channels: CoreMetrics.Gauge
    let draining: CoreMetrics.Gauge
    /// Deliveries handed between event loops and not run yet (`DeliveryBacklog`), about bytes.
    let deliveryBacklog: CoreMetrics.Gauge
    let publications: CoreMetrics.Counter
    let deliveries: CoreMetrics.Counter
    let bytesOut: CoreMetrics.Counter
    let bytesIn: CoreMetrics.Counter
    let slowConsumerDisconnects: CoreMetrics.Counter
    let recovered: CoreMetrics.Counter
    let notRecovered: CoreMetrics.Counter
    let brokerInterruptions: CoreMetrics.Counter
    let gaps: CoreMetrics.Counter
    let insufficientState: CoreMetrics.Counter
    let requestTimeouts: CoreMetrics.Counter
    /// Connections refused over `--max-connections` (`reason="node"`) or `--max-connections-per-ip` (`reason="address"`).
    let refusedConnectionsNode: CoreMetrics.Counter
    let refusedConnectionsAddress: CoreMetrics.Counter
    /// Connections refused over `limits.connectsPerIPPerSecond` (`reason="rate"`) and per-user caps (`reason="user"`).
    let refusedConnectionsRate: CoreMetrics.Counter
    let refusedConnectionsUser: CoreMetrics.Counter
    /// Connections dropped unanswered as they were accepted, from an address flooding the node
    /// past its connect rate (`reason="shed"`, see `AcceptShedder`).
    let refusedConnectionsShed: CoreMetrics.Counter
    /// Connections admitted on this node's per-user count alone because the broker could not
    /// answer (`limits.connectionsPerUser` fails open to per-node counting).
    let userLimitUnchecked: CoreMetrics.Counter
    let brokerPublishDuration: CoreMetrics.Timer
    /// Node-side rebalancing: rounds started, clients asked to move, this node's load ÷ the mean.
    let rebalanceRounds: CoreMetrics.Counter
    let rebalanceMovedClients: CoreMetrics.Counter
    let rebalanceImbalance: CoreMetrics.Gauge
    /// Refusals for identity and behaviour (tokens, permissions, origins, command rate) and dev mode.
    let auth: AuthRefusalMetrics
    let publishToDeliver: CoreMetrics.Timer

    /// `switchboard_build_info{version, commit}`, always 1.
    let buildInfo: Prometheus.Gauge
    /// `process_start_time_seconds`, read once at start (nil without `/proc`).
    let processStartTime: Double?

    /// - Parameters:
    ///   - version: the release version (`SwitchboardVersion.current`).
    ///   - commit: the source commit, from ``commitFromEnvironment()``; "unknown" when not known.
    init(version: String = SwitchboardVersion.current, commit: String = "unknown") {
        let registry = PrometheusCollectorRegistry()
        let latencyBuckets: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
        ]
        let factory = DescribedMetricsFactory(registry: registry, durationBuckets: latencyBuckets)
        self.registry = registry
        let connectionsHelp = factory.describing(
            "Open sessions by transport (a long-poll counts while it waits, an rpc call while it runs).")
        self.connections = TransportName.allCases.map {
            CoreMetrics.Gauge(label: "switchboard_connections", dimensions: [("transport", $0.rawValue)], factory: connectionsHelp)
        }
        self.subscriptions = CoreMetrics.Gauge(
            label: "switchboard_subscriptions", factory: factory.describing("Channel subscriptions held by this node's sessions."))
        self.channels = CoreMetrics.Gauge(
            label: "switchboard_channels", factory: factory.describing("Channels with at least one subscriber on this node."))
        self.draining = CoreMetrics.Gauge(
            label: "switchboard_draining", factory: factory.describing("1 while the node drains or stops (after SIGTERM), else 0."))
        self.deliveryBacklog = CoreMetrics.Gauge(
            label: "switchboard_delivery_backlog_bytes",
            factory: factory.describing(
                "Deliveries from Redis handed between event loops and not run yet, about bytes; reads from Redis wait above 64 MiB."))
        self.publications = CoreMetrics.Counter(
            label: "switchboard_publications_total",
            factory: factory.describing("Publications accepted by this node (client publish and HTTP API), counted once each."))
        self.deliveries = CoreMetrics.Counter(
            label: "switchboard_deliveries_total", factory: factory.describing("Publications written to subscribers of this node."))
        self.bytesOut = CoreMetrics.Counter(
            label: "switchboard_sent_bytes_total", factory: factory.describing("Bytes written to client connections."))
        self.bytesIn = CoreMetrics.Counter(
            label: "switchboard_received_bytes_total", factory: factory.describing("Bytes read from client connections."))
        self.slowConsumerDisconnects = CoreMetrics.Counter(
            label: "switchboard_slow_consumer_disconnects_total",
            factory: factory.describing("Connections closed because their unsent output passed the outbound limit."))
        let recoveriesHelp = factory.describing(
            "Subscriptions with a recovery position, by result: recovered (every missed publication sent) or not_recovered.")
        self.recovered = CoreMetrics.Counter(
            label: "switchboard_recoveries_total", dimensions: [("result", "recovered")], factory: recoveriesHelp)
        self.notRecovered = CoreMetrics.Counter(
            label: "switchboard_recoveries_total", dimensions: [("result", "not_recovered")], factory: recoveriesHelp)
        self.brokerInterruptions = CoreMetrics.Counter(
            label: "switchboard_broker_interruptions_total",
            factory: factory.describing("Times the broker subscription was lost (reconnect or failed probe) and channels were refilled."))
        self.gaps = CoreMetrics.Counter(
            label: "switchboard_gaps_detected_total",
            factory: factory.describing("Gaps in a channel's offsets seen from the broker, each refilled from history."))
        self.insufficientState = CoreMetrics.Counter(
            label: "switchboard_insufficient_state_total",
            factory: factory.describing("Times a channel's missing publications were no longer in history (subscribers told to resubscribe)."))
        self.requestTimeouts = CoreMetrics.Counter(
            label: "switchboard_request_timeouts_total",
            factory: factory.describing("HTTP requests closed because their head or body did not arrive in time."))
        let refusedHelp = factory.describing(
            "Connections refused over a cap, by reason: node (--max-connections), address (--max-connections-per-ip), "
                + "rate (limits.connectsPerIPPerSecond), shed (dropped unanswered: an address past twice that rate) "
                + "or user (limits.connectionsPerUser).")
        self.refusedConnectionsNode = CoreMetrics.Counter(
            label: "switchboard_refused_connections_total", dimensions: [("reason", "node")], factory: refusedHelp)
        self.refusedConnectionsAddress = CoreMetrics.Counter(
            label: "switchboard_refused_connections_total", dimensions: [("reason", "address")], factory: refusedHelp)
        self.refusedConnectionsRate = CoreMetrics.Counter(
            label: "switchboard_refused_connections_total", dimensions: [("reason", "rate")], factory: refusedHelp)
        self.refusedConnectionsUser = CoreMetrics.Counter(
            label: "switchboard_refused_connections_total", dimensions: [("reason", "user")], factory: refusedHelp)
        self.refusedConnectionsShed = CoreMetrics.Counter(
            label: "switchboard_refused_connections_total", dimensions: [("reason", "shed")], factory: refusedHelp)
        self.userLimitUnchecked = CoreMetrics.Counter(
            label: "switchboard_user_limit_unchecked_total",
            factory: factory.describing(
                "Connections admitted under limits.connectionsPerUser on this node's count alone: the broker did not answer (fail-open)."))
        self.auth = AuthRefusalMetrics(factory: factory)
        self.brokerPublishDuration = CoreMetrics.Timer(
            label: "switchboard_broker_publish_seconds", factory: factory.describing("Time from a publish sent to the broker to its answer."))
        self.publishToDeliver = CoreMetrics.Timer(
            label: "switchboard_publish_to_deliver_seconds",
            factory: factory.describing("Time from a publication's acceptance to its write to this node's subscribers."))
        self.rebalanceRounds = CoreMetrics.Counter(
            label: "switchboard_rebalance_rounds_total",
            factory: factory.describing("Rebalancing rounds started: this node held more than (1 + tolerance) x the ready nodes' mean for the hold time."))
        self.rebalanceMovedClients = CoreMetrics.Counter(
            label: "switchboard_rebalance_moved_clients_total",
            factory: factory.describing("Clients asked to move to another node (disconnect 3002) by rebalancing rounds."))
        self.rebalanceImbalance = CoreMetrics.Gauge(
            label: "switchboard_rebalance_imbalance_ratio",
            factory: factory.describing("This node's connections divided by the mean of the ready nodes in the registry (1 when alone)."))
        self.buildInfo = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                metricName: "switchboard_build_info", unitName: "",
                helpText: "Always 1; the labels name the running build's version and source commit."),
            labels: [("version", version), ("commit", commit)])
        self.buildInfo.set(to: 1)
        self.processStartTime = ProcessMetrics.startTime()
    }

    /// The text exposition format for `GET /metrics`: the node's metrics and
    /// the standard `process_*` metrics, read now.
    func exposition() -> String {
        var text = self.registry.emitToString()
        ProcessMetrics.sample(startTime: self.processStartTime).write(into: &text)
        return text
    }

    /// The commit for `switchboard_build_info`: `SWITCHBOARD_COMMIT` from the
    /// environment at start (set it when building or deploying, e.g. to
    /// `git rev-parse --short HEAD`), else "unknown". A Swift package cannot
    /// stamp the commit into the binary without a build plugin, and the
    /// running node has no repository to ask. Only 1-64 characters of
    /// `[0-9A-Za-z._-]` are taken; anything else reads "unknown".
    static func commitFromEnvironment() -> String {
        guard let raw = getenv("SWITCHBOARD_COMMIT") else { return "unknown" }
        return Self.validCommit(String(cString: raw))
    }

    /// `value` when it is 1-64 characters of `[0-9A-Za-z._-]`, else "unknown".
    static func validCommit(_ value: String) -> String {
        let allowed = value.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
        return allowed && !value.isEmpty && value.utf8.count <= 64 ? value : "unknown"
    }
}

/// One event loop's counts since the last flush into `NodeMetrics`.
struct LoopCounters {
    var deliveries = 0
    var bytesOut = 0
    var bytesIn = 0
    var publications = 0
    var slowConsumers = 0
    var recovered = 0
    var notRecovered = 0

    mutating func flush(into metrics: NodeMetrics) {
        if self.deliveries > 0 { metrics.deliveries.increment(by: self.deliveries) }
        if self.bytesOut > 0 { metrics.bytesOut.increment(by: self.bytesOut) }
        if self.bytesIn > 0 { metrics.bytesIn.increment(by: self.bytesIn) }
        if self.publications > 0 { metrics.publications.increment(by: self.publications) }
        if self.slowConsumers > 0 { metrics.slowConsumerDisconnects.increment(by: self.slowConsumers) }
        if self.recovered > 0 { metrics.recovered.increment(by: self.recovered) }
        if self.notRecovered > 0 { metrics.notRecovered.increment(by: self.notRecovered) }
        self = LoopCounters()
    }
}
