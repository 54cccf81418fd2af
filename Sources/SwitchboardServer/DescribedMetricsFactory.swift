import CoreMetrics
import Prometheus

/// A swift-metrics factory that creates Prometheus metrics with help text.
///
/// `PrometheusMetricsFactory` registers every family with an empty help,
/// so the exposition has no `# HELP` lines and `promtool check metrics`
/// complains about each one. This factory asks the registry directly, with
/// the text given to ``describing(_:)``, and returns the same handler types,
/// so the node keeps using `CoreMetrics.Counter`, `Gauge` and `Timer`.
///
/// The registry requires one help text per metric name: give every metric of
/// a family (the same name with different labels) the same text.
struct DescribedMetricsFactory: CoreMetrics.MetricsFactory {
    let registry: PrometheusCollectorRegistry
    /// Histogram buckets for every `Timer`.
    let durationBuckets: [Duration]
    /// The help text the next metrics are created with.
    let help: String

    init(registry: PrometheusCollectorRegistry, durationBuckets: [Duration], help: String = "") {
        self.registry = registry
        self.durationBuckets = durationBuckets
        self.help = help
    }

    /// This factory with `help` as the text of the metrics it creates.
    func describing(_ help: String) -> DescribedMetricsFactory {
        DescribedMetricsFactory(registry: self.registry, durationBuckets: self.durationBuckets, help: help)
    }

    /// The registry's name for `label` with this factory's help text (the name is used as given).
    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: self.help)
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CoreMetrics.CounterHandler {
        self.registry.makeCounter(descriptor: self.descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any CoreMetrics.FloatingPointCounterHandler {
        self.registry.makeCounter(descriptor: self.descriptor(label), labels: dimensions)
    }

    /// A gauge for `CoreMetrics.Gauge` (not aggregated); an aggregated
    /// `Recorder` would need value buckets, which the node does not use.
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any CoreMetrics.RecorderHandler {
        precondition(!aggregate, "DescribedMetricsFactory makes gauges only: use CoreMetrics.Gauge")
        return self.registry.makeGauge(descriptor: self.descriptor(label), labels: dimensions)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any CoreMetrics.MeterHandler {
        self.registry.makeGauge(descriptor: self.descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any CoreMetrics.TimerHandler {
        self.registry.makeDurationHistogram(descriptor: self.descriptor(label), labels: dimensions, buckets: self.durationBuckets)
    }

    func destroyCounter(_ handler: any CoreMetrics.CounterHandler) {
        if let counter = handler as? Prometheus.Counter { self.registry.unregisterCounter(counter) }
    }

    func destroyFloatingPointCounter(_ handler: any CoreMetrics.FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { self.registry.unregisterCounter(counter) }
    }

    func destroyRecorder(_ handler: any CoreMetrics.RecorderHandler) {
        if let gauge = handler as? Prometheus.Gauge { self.registry.unregisterGauge(gauge) }
    }

    func destroyMeter(_ handler: any CoreMetrics.MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { self.registry.unregisterGauge(gauge) }
    }

    func destroyTimer(_ handler: any CoreMetrics.TimerHandler) {
        if let histogram = handler as? Prometheus.DurationHistogram { self.registry.unregisterDurationHistogram(histogram) }
    }
}
