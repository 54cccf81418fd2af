#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Minimal inline SVG charts for the HTML report: axes with ticks, bars and
/// polylines. No scripts, no external resources.
struct SVGChart {
    struct Series {
        var name: String
        var color: String
        var points: [(x: Double, y: Double)]
        var bars = false
        /// Plot against the right-hand axis.
        var rightAxis = false
    }

    struct Tick {
        var value: Double
        var label: String
    }

    var title: String
    var xLabel: String
    var yLabel: String
    var rightLabel: String = ""
    var width = 880.0
    var height = 320.0
    var xTicks: [Tick]? = nil
    var series: [Series] = []

    private let left = 70.0
    private let right = 70.0
    private let top = 36.0
    private let bottom = 48.0

    func render() -> String {
        let all = self.series.flatMap(\.points)
        guard !all.isEmpty else {
            return "<p class=\"empty\">\(escapeHTML(self.title)): no data</p>"
        }
        let plotW = self.width - self.left - self.right
        let plotH = self.height - self.top - self.bottom
        let xs = all.map(\.x)
        var xMin = xs.min() ?? 0
        var xMax = xs.max() ?? 1
        if let ticks = self.xTicks, !ticks.isEmpty {
            xMin = min(xMin, ticks.map(\.value).min()!)
            xMax = max(xMax, ticks.map(\.value).max()!)
        }
        if xMax <= xMin { xMax = xMin + 1 }
        let barSeries = self.series.filter(\.bars)
        if !barSeries.isEmpty { xMin -= 0.5; xMax += 0.5 }
        func yRange(_ series: [Series]) -> Double {
            let maxY = series.flatMap(\.points).map(\.y).max() ?? 1
            return Self.niceCeiling(maxY > 0 ? maxY : 1)
        }
        let leftMax = yRange(self.series.filter { !$0.rightAxis })
        let rightMax = yRange(self.series.filter(\.rightAxis))
        func px(_ x: Double) -> Double { self.left + (x - xMin) / (xMax - xMin) * plotW }
        func py(_ y: Double, _ rightAxis: Bool) -> Double {
            self.top + plotH - y / (rightAxis ? rightMax : leftMax) * plotH
        }

        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(n(self.width)) \(n(self.height))\" "
        svg += "width=\"\(n(self.width))\" height=\"\(n(self.height))\" role=\"img\" aria-label=\"\(escapeHTML(self.title))\">\n"
        svg += "<text x=\"\(n(self.left))\" y=\"20\" class=\"title\">\(escapeHTML(self.title))</text>\n"
        // grid and y ticks
        for i in 0...4 {
            let value = leftMax * Double(i) / 4
            let y = py(value, false)
            svg += "<line x1=\"\(n(self.left))\" y1=\"\(n(y))\" x2=\"\(n(self.left + plotW))\" y2=\"\(n(y))\" class=\"grid\"/>\n"
            svg += "<text x=\"\(n(self.left - 6))\" y=\"\(n(y + 4))\" class=\"tick\" text-anchor=\"end\">\(Self.short(value))</text>\n"
            if self.series.contains(where: \.rightAxis) {
                let rv = rightMax * Double(i) / 4
                svg += "<text x=\"\(n(self.left + plotW + 6))\" y=\"\(n(y + 4))\" class=\"tick\">\(Self.short(rv))</text>\n"
            }
        }
        // x ticks
        let ticks = self.xTicks ?? Self.linearTicks(xMin, xMax, minimumStep: barSeries.isEmpty ? 0 : 1)
        for tick in ticks where tick.value >= xMin && tick.value <= xMax {
            let x = px(tick.value)
            svg += "<line x1=\"\(n(x))\" y1=\"\(n(self.top + plotH))\" x2=\"\(n(x))\" y2=\"\(n(self.top + plotH + 4))\" class=\"axis\"/>\n"
            svg += "<text x=\"\(n(x))\" y=\"\(n(self.top + plotH + 17))\" class=\"tick\" text-anchor=\"middle\">\(escapeHTML(tick.label))</text>\n"
        }
        svg += "<line x1=\"\(n(self.left))\" y1=\"\(n(self.top + plotH))\" x2=\"\(n(self.left + plotW))\" y2=\"\(n(self.top + plotH))\" class=\"axis\"/>\n"
        svg += "<line x1=\"\(n(self.left))\" y1=\"\(n(self.top))\" x2=\"\(n(self.left))\" y2=\"\(n(self.top + plotH))\" class=\"axis\"/>\n"
        svg += "<text x=\"\(n(self.left + plotW / 2))\" y=\"\(n(self.height - 8))\" class=\"label\" text-anchor=\"middle\">\(escapeHTML(self.xLabel))</text>\n"
        svg += "<text x=\"14\" y=\"\(n(self.top + plotH / 2))\" class=\"label\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(n(self.top + plotH / 2)))\">\(escapeHTML(self.yLabel))</text>\n"
        if !self.rightLabel.isEmpty {
            let x = self.width - 12
            svg += "<text x=\"\(n(x))\" y=\"\(n(self.top + plotH / 2))\" class=\"label\" text-anchor=\"middle\" transform=\"rotate(90 \(n(x)) \(n(self.top + plotH / 2)))\">\(escapeHTML(self.rightLabel))</text>\n"
        }
        // data
        for series in self.series {
            if series.bars {
                let slot = plotW / max(1, xMax - xMin)
                let barW = max(1, slot * 0.8)
                for point in series.points {
                    let y = py(point.y, series.rightAxis)
                    svg += "<rect x=\"\(n(px(point.x) - barW / 2))\" y=\"\(n(y))\" width=\"\(n(barW))\" height=\"\(n(self.top + plotH - y))\" fill=\"\(series.color)\"><title>\(Self.short(point.x)): \(Self.short(point.y))</title></rect>\n"
                }
            } else {
                let path = series.points.map { "\(n(px($0.x))),\(n(py($0.y, series.rightAxis)))" }.joined(separator: " ")
                svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(series.color)\" stroke-width=\"2\"/>\n"
                if series.points.count <= 60 {
                    for point in series.points {
                        svg += "<circle cx=\"\(n(px(point.x)))\" cy=\"\(n(py(point.y, series.rightAxis)))\" r=\"2.5\" fill=\"\(series.color)\"><title>\(Self.short(point.x)): \(Self.short(point.y))</title></circle>\n"
                    }
                }
            }
        }
        // legend
        var lx = self.left + 8
        for series in self.series {
            svg += "<rect x=\"\(n(lx))\" y=\"\(n(self.top + 4))\" width=\"10\" height=\"10\" fill=\"\(series.color)\"/>"
            svg += "<text x=\"\(n(lx + 14))\" y=\"\(n(self.top + 13))\" class=\"tick\">\(escapeHTML(series.name))</text>\n"
            lx += 24 + Double(series.name.count) * 6.5
        }
        svg += "</svg>\n"
        return svg
    }

    static func linearTicks(_ lo: Double, _ hi: Double, minimumStep: Double = 0) -> [Tick] {
        let step = max(minimumStep, niceCeiling((hi - lo) / 8))
        guard step > 0 else { return [] }
        var ticks: [Tick] = []
        var value = (lo / step).rounded(.up) * step
        while value <= hi, ticks.count < 20 {
            ticks.append(Tick(value: value, label: short(value)))
            value += step
        }
        return ticks
    }

    /// 1, 2, 5 × 10^k at or above `value`.
    static func niceCeiling(_ value: Double) -> Double {
        guard value > 0, value.isFinite else { return 1 }
        let power = pow(10, floor(log10(value)))
        for factor in [1.0, 2.0, 5.0, 10.0] where factor * power >= value { return factor * power }
        return 10 * power
    }

    static func short(_ value: Double) -> String {
        let magnitude = value.magnitude
        if magnitude >= 1_000_000 { return ResultTable.format(value / 1_000_000, digits: 1) + "M" }
        if magnitude >= 10_000 { return ResultTable.format(value / 1000, digits: 0) + "k" }
        if magnitude >= 100 || value == value.rounded() { return ResultTable.format(value, digits: 0) }
        if magnitude >= 1 { return ResultTable.format(value, digits: 2) }
        return ResultTable.format(value, digits: 3)
    }

    private func n(_ value: Double) -> String { ResultTable.format(value, digits: 1) }
}

func escapeHTML(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.count)
    for character in text {
        switch character {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        default: out.append(character)
        }
    }
    return out
}
