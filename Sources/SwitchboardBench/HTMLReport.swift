#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A self-contained HTML page (inline SVG and CSS, no scripts, no external
/// resources) with the result table, the publish-to-deliver latency
/// distribution, its percentile curve, and the run's time series.
public enum HTMLReport {
    public static func render(_ result: BenchResult) -> String {
        var body = ""
        body += "<h1>switchboard-bench \(escapeHTML(result.scenario.rawValue))</h1>\n"
        body += "<pre>\(escapeHTML(ResultTable.render(result)))</pre>\n"
        let latency = result.publications != nil ? result.latencyHistogram : result.handshakeHistogram
        let what = result.publications != nil ? "publish → deliver" : "handshake"
        if latency.count > 0 {
            body += Self.distributionChart(latency, title: "\(what) latency distribution (\(latency.count) samples)")
            body += Self.percentileChart(latency, title: "\(what) latency by percentile")
        }
        body += Self.seriesChart(result)
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>switchboard-bench \(escapeHTML(result.scenario.rawValue))</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 960px; }
            pre { background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 12.5px; }
            svg { display: block; margin: 18px 0; background: #fff; border: 1px solid #ddd; }
            svg .title { font-size: 14px; font-weight: 600; }
            svg .tick { font-size: 11px; fill: #444; }
            svg .label { font-size: 12px; fill: #222; }
            svg .grid { stroke: #eee; }
            svg .axis { stroke: #888; }
            .empty { color: #888; }
            </style></head>
            <body>
            \(body)
            </body></html>

            """
    }

    /// Counts per tenth of a decade of latency, on a log axis.
    static func distributionChart(_ histogram: LatencyHistogram, title: String) -> String {
        var bins: [Int: Double] = [:]
        for bucket in histogram.buckets {
            let ms = max(0.001, Double(bucket.micros) / 1000)
            bins[Int((log10(ms) * 10).rounded(.down)), default: 0] += Double(bucket.count)
        }
        let keys = bins.keys.sorted()
        guard let lo = keys.first, let hi = keys.last else { return "" }
        let points = (lo...hi).map { (x: Double($0) / 10 + 0.05, y: bins[$0] ?? 0) }
        var ticks: [SVGChart.Tick] = []
        for decade in Int((Double(lo) / 10).rounded(.down))...Int((Double(hi) / 10).rounded(.up)) {
            ticks.append(.init(value: Double(decade), label: Self.msLabel(pow(10, Double(decade)))))
        }
        var chart = SVGChart(title: title, xLabel: "latency (ms, log scale)", yLabel: "samples")
        chart.xTicks = ticks
        chart.series = [.init(name: "samples per 1/10 decade", color: "#4a7bd0", points: points)]
        return chart.render()
    }

    /// Latency against percentile, x = -log10(1 - p): 0, 90, 99, 99.9, 99.99 evenly spaced.
    static func percentileChart(_ histogram: LatencyHistogram, title: String) -> String {
        var cumulative: UInt64 = 0
        var points: [(x: Double, y: Double)] = []
        let total = Double(histogram.count)
        for bucket in histogram.buckets {
            cumulative += bucket.count
            // the top sample sits at the highest percentile the sample count can resolve
            let fraction = min(Double(cumulative) / total, 1 - 1 / max(total, 2), 0.99999)
            let ms = min(Double(bucket.micros) / 1000, histogram.maximumMilliseconds)
            points.append((x: -log10(1 - fraction), y: ms))
        }
        let ticks: [SVGChart.Tick] = [
            .init(value: 0, label: "0%"), .init(value: 0.30103, label: "50%"), .init(value: 1, label: "90%"),
            .init(value: 2, label: "99%"), .init(value: 3, label: "99.9%"), .init(value: 4, label: "99.99%"),
            .init(value: 5, label: "99.999%"),
        ]
        var chart = SVGChart(title: title, xLabel: "percentile", yLabel: "latency (ms)")
        chart.xTicks = Array(ticks.prefix { $0.value <= max(2, (points.last?.x ?? 2).rounded(.up)) })
        chart.series = [.init(name: "latency at percentile", color: "#d0584a", points: points)]
        return chart.render()
    }

    /// Per-second activity: deliveries (or new connections) as bars, mean and max latency as lines.
    static func seriesChart(_ result: BenchResult) -> String {
        let series = result.series
        guard !series.isEmpty else { return "" }
        var chart: SVGChart
        if result.publications != nil {
            chart = SVGChart(title: "deliveries per second and latency over the run", xLabel: "second of the run", yLabel: "deliveries/s")
            chart.rightLabel = "latency (ms)"
            chart.series = [
                .init(name: "deliveries/s", color: "#9db8e8", points: series.map { (x: Double($0.second), y: Double($0.deliveries)) }, bars: true),
                .init(
                    name: "mean latency ms", color: "#2f8f4e",
                    points: series.compactMap { p in p.latencyMeanMs.map { (x: Double(p.second), y: $0) } }, rightAxis: true
                ),
                .init(
                    name: "max latency ms", color: "#d0584a",
                    points: series.compactMap { p in p.latencyMaxMs.map { (x: Double(p.second), y: $0) } }, rightAxis: true
                ),
            ]
        } else {
            chart = SVGChart(title: "connections established per second", xLabel: "second of the run", yLabel: "connections/s")
            chart.series = [
                .init(name: "established/s", color: "#9db8e8", points: series.map { (x: Double($0.second), y: Double($0.established)) }, bars: true)
            ]
        }
        return chart.render()
    }

    static func msLabel(_ ms: Double) -> String {
        if ms >= 1000 { return ResultTable.format(ms / 1000, digits: 0) + " s" }
        if ms >= 1 { return ResultTable.format(ms, digits: 0) + " ms" }
        if ms >= 0.1 { return ResultTable.format(ms, digits: 1) + " ms" }
        if ms >= 0.01 { return ResultTable.format(ms, digits: 2) + " ms" }
        return ResultTable.format(ms, digits: 3) + " ms"
    }
}
