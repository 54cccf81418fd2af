import CoreMetrics
import Prometheus

/// The node's Prometheus metrics, created once at start.
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
    let brokerPublishDuration: CoreMetrics.Timer
    let publishToDeliver: CoreMetrics.Timer

    init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let latencyBuckets: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
        ]
        factory.defaultDurationHistogramBuckets = latencyBuckets
        self.registry = registry
        self.connections = TransportName.allCases.map {
            CoreMetrics.Gauge(label: "switchboard_connections", dimensions: [("transport", $0.rawValue)], factory: factory)
        }
        self.subscriptions = CoreMetrics.Gauge(label: "switchboard_subscriptions", factory: factory)
        self.channels = CoreMetrics.Gauge(label: "switchboard_channels", factory: factory)
        self.draining = CoreMetrics.Gauge(label: "switchboard_draining", factory: factory)
        self.publications = CoreMetrics.Counter(label: "switchboard_publications_total", factory: factory)
        self.deliveries = CoreMetrics.Counter(label: "switchboard_deliveries_total", factory: factory)
        self.bytesOut = CoreMetrics.Counter(label: "switchboard_sent_bytes_total", factory: factory)
        self.bytesIn = CoreMetrics.Counter(label: "switchboard_received_bytes_total", factory: factory)
        self.slowConsumerDisconnects = CoreMetrics.Counter(label: "switchboard_slow_consumer_disconnects_total", factory: factory)
        self.recovered = CoreMetrics.Counter(label: "switchboard_recoveries_total", dimensions: [("result", "recovered")], factory: factory)
        self.notRecovered = CoreMetrics.Counter(label: "switchboard_recoveries_total", dimensions: [("result", "not_recovered")], factory: factory)
        self.brokerInterruptions = CoreMetrics.Counter(label: "switchboard_broker_interruptions_total", factory: factory)
        self.gaps = CoreMetrics.Counter(label: "switchboard_gaps_detected_total", factory: factory)
        self.insufficientState = CoreMetrics.Counter(label: "switchboard_insufficient_state_total", factory: factory)
        self.requestTimeouts = CoreMetrics.Counter(label: "switchboard_request_timeouts_total", factory: factory)
        self.refusedConnectionsNode = CoreMetrics.Counter(label: "switchboard_refused_connections_total", dimensions: [("reason", "node")], factory: factory)
        self.refusedConnectionsAddress = CoreMetrics.Counter(label: "switchboard_refused_connections_total", dimensions: [("reason", "address")], factory: factory)
        self.brokerPublishDuration = CoreMetrics.Timer(label: "switchboard_broker_publish_seconds", factory: factory)
        self.publishToDeliver = CoreMetrics.Timer(label: "switchboard_publish_to_deliver_seconds", factory: factory)
    }

    /// The text exposition format for `GET /metrics`.
    func exposition() -> String {
        self.registry.emitToString()
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
