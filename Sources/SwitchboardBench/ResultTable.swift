/// The plain-text report printed on stdout: a header line, a two-column
/// table of figures, and a percentile table for the latencies.
public enum ResultTable {
    public static func render(_ result: BenchResult) -> String {
        var rows: [(String, String)] = []
        let c = result.connections
        rows.append(("connections", "\(c.established) of \(c.attempted) established, \(c.failed) failed, \(c.dropped) dropped"))
        if c.subscribed > 0 || c.subscribeErrors > 0 {
            rows.append(("subscriptions", "\(c.subscribed) confirmed, \(c.subscribeErrors) refused"))
        }
        rows.append(("handshakes/s", format(c.handshakesPerSecond, digits: 0)))
        if let p = result.publications {
            let via = result.parameters.publishVia ?? "websocket"
            rows.append((
                "published",
                "\(p.published) messages, \(format(p.publishedPerSecond, digits: 0))/s achieved, "
                    + "\(result.parameters.publishers ?? 1) publisher(s) via \(via), \(result.parameters.payloadSize ?? 0) B, "
                    + "\(result.parameters.channels) channel(s); \(p.publishErrors) refused"
            ))
            rows.append(("delivered", "\(p.delivered) of \(p.expected) expected"))
            rows.append(("loss", "\(p.lost) (\(format(p.lossPercent, digits: 3))%)"))
            rows.append(("deliveries/s", "\(format(p.deliveriesPerSecond, digits: 0)) over \(format(p.deliverySeconds, digits: 2)) s"))
            rows.append(("order", "out-of-order \(p.outOfOrder), offset gaps \(p.gaps), unwarmed \(p.unwarmed), unparsed \(p.unparsed)"))
        }
        if let p = result.pingPong {
            rows.append(("round trips/s", "\(format(p.roundTripsPerSecond, digits: 0)) (\(p.measuredRoundTrips) in \(format(p.measuredSeconds, digits: 2)) s, \(p.loops) loops)"))
            rows.append(("round trips", "\(p.sent) sent, \(p.roundTrips) matched, \(p.lost) lost, \(p.timeouts) timed out; publish errors \(p.publishErrors)"))
            rows.append(("echoes", "duplicate \(p.duplicates), late \(p.late), unexpected \(p.unexpected), others' \(p.foreign); offset gaps \(p.offsetGaps)"))
            if let cpu = p.serverCPUSeconds {
                let per = p.serverCPUMicrosecondsPerRoundTrip.map { format($0, digits: 1) + " µs per round trip" } ?? "-"
                rows.append(("server CPU", "\(format(cpu, digits: 2)) s in the window, \(per)"))
            }
        }
        if let cpus = result.loadCPUs {
            rows.append(("load CPUs", cpus.map(String.init).joined(separator: ",")))
        }
        for server in result.servers {
            var text = "RSS \(mb(server.rssBeforeKB)) before"
            if let open = server.rssOpenKB { text += ", \(mb(open)) all open" }
            if let end = server.rssEndKB { text += ", \(mb(end)) at end" }
            if let after = server.rssAfterCloseKB { text += ", \(mb(after)) after close" }
            if let cpu = server.cpuSeconds { text += "; CPU \(format(cpu, digits: 1)) s" }
            rows.append(("server \(server.pid)", text))
        }
        if let memory = result.memory {
            rows.append((
                "memory/conn",
                "\(format(memory.kbPerConnection, digits: 2)) KB (\(memory.rssGrowthKB) kB RSS growth / \(memory.connections) connections, \(memory.basis))"
            ))
        }
        rows.append(("server errors", "\(result.errors)" + (result.connections.pings > 0 ? ", \(result.connections.pings) pings answered" : "")))
        rows.append(("elapsed", "\(format(result.elapsedSeconds, digits: 1)) s" + (result.timedOut ? " (TIMED OUT)" : "")))

        var out = "switchboard-bench \(result.scenario)  \(result.processes) process(es) x \(result.threadsPerProcess) thread(s)\n"
        out += "  url \(result.urls.joined(separator: ","))"
        if !result.publisherURLs.isEmpty, result.publisherURLs != [result.urls.first ?? ""] {
            out += "  publishers \(result.publisherURLs.joined(separator: ","))"
        }
        out += "\n\n"
        let width = rows.map(\.0.count).max() ?? 0
        for (label, value) in rows {
            out += "  " + label.paddedRight(to: width) + "  " + value + "\n"
        }
        var latencies: [(String, LatencySummary)] = [("handshake", c.handshakeMs)]
        if let p = result.publications { latencies.insert(("publish->deliver", p.latencyMs), at: 0) }
        if let p = result.pingPong { latencies.insert(("round trip", p.latencyMs), at: 0) }
        latencies = latencies.filter { $0.1.count > 0 }
        if !latencies.isEmpty {
            let columns = ["ms", "p50", "p90", "p99", "p99.9", "max", "mean", "count"]
            var table: [[String]] = [columns]
            for (name, s) in latencies {
                table.append([name] + [s.p50, s.p90, s.p99, s.p999, s.max, s.mean].map { format($0, digits: 3) } + ["\(s.count)"])
            }
            let widths = columns.indices.map { i in table.map { $0[i].count }.max() ?? 0 }
            out += "\n"
            for row in table {
                out += "  " + row.enumerated().map { i, cell in i == 0 ? cell.paddedRight(to: widths[i]) : cell.paddedLeft(to: widths[i]) }
                    .joined(separator: "  ") + "\n"
            }
        }
        for sample in result.errorSamples { out += "  ! " + sample + "\n" }
        for note in result.notes { out += "  note: " + note + "\n" }
        return out
    }

    static func mb(_ kb: Int64) -> String { format(Double(kb) / 1024, digits: 1) + " MB" }

    /// Fixed-point formatting without Foundation.
    static func format(_ value: Double, digits: Int) -> String {
        guard value.isFinite else { return "-" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (value.magnitude * scale).rounded()
        guard scaled < 9e17 else { return "\(value)" }
        let whole = Int64(scaled) / Int64(scale)
        let fraction = Int64(scaled) % Int64(scale)
        var text = (value < 0 && scaled > 0 ? "-" : "") + String(whole)
        if digits > 0 {
            let f = String(fraction)
            text += "." + String(repeating: "0", count: digits - f.count) + f
        }
        return text
    }
}

extension String {
    func paddedRight(to width: Int) -> String {
        self.count >= width ? self : self + String(repeating: " ", count: width - self.count)
    }

    func paddedLeft(to width: Int) -> String {
        self.count >= width ? self : String(repeating: " ", count: width - self.count) + self
    }
}
