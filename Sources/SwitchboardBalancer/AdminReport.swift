public import NIOCore
import SwitchboardCore

/// The admin API's documents, built from a snapshot of the router: `GET /admin/nodes` (JSON) and
/// `GET /metrics` (Prometheus text). Pure functions of the snapshot, tested without sockets.
public enum AdminReport {
    /// `{"algorithm", "clients", "nodes": [...]}`, one object per node in the table.
    public static func nodesJSON(table: NodeTable, counters: NodeRouter.Counters, algorithm: BalancingAlgorithm, now: NIODeadline)
        -> ByteBuffer
    {
        var nodes: [JSONValue] = []
        let ids = table.memberOrder + table.entries.keys.filter { !table.memberOrder.contains($0) }.sorted()
        for id in ids {
            guard let entry = table.entries[id] else { continue }
            var members: [(key: String, value: JSONValue)] = [
                ("id", .string(id)), ("host", .string(entry.node.host)), ("port", .integer(entry.node.port)),
                ("weight", .integer(entry.node.weight)), ("member", .bool(entry.isMember)),
                ("up", .bool(entry.health.isUp)), ("ejected", .bool(entry.health.isEjected(at: now))),
                ("drained", .bool(entry.drained)),
                ("available", .bool(entry.isMember && !entry.drained && entry.health.isAvailable(at: now))),
                ("active", .integer(entry.active)), ("picks", .integer(entry.picks)),
                ("connectFailures", .integer(entry.connectFailures)), ("serverErrors", .integer(entry.serverErrors)),
                ("ejections", .integer(entry.ejections)),
                ("checksFailed", .integer(entry.checksFailed)),
                ("bytesToNode", .integer(entry.bytesToNode)), ("bytesFromNode", .integer(entry.bytesFromNode)),
            ]
            members.append(("responseTimeSeconds", entry.responseTime.map { .number(Self.decimal($0)) } ?? .null))
            nodes.append(.object(JSONObject(members)))
        }
        let document = JSONValue.object(
            JSONObject([
                ("algorithm", .string(algorithm.rawValue)), ("clients", .integer(counters.open)),
                ("accepted", .integer(counters.accepted)), ("nodes", .array(nodes)),
            ]))
        var buffer = ByteBuffer()
        buffer.writeJSON(document)
        buffer.writeStaticString("\n")
        return buffer
    }

    /// Prometheus text exposition of the balancer's counters and each node's row.
    public static func metricsText(table: NodeTable, counters: NodeRouter.Counters, now: NIODeadline) -> ByteBuffer {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        family("switchboard_balancer_client_connections", "gauge", "Client connections open now.")
        out += "switchboard_balancer_client_connections \(counters.open)\n"
        family("switchboard_balancer_accepted_total", "counter", "Client connections admitted.")
        out += "switchboard_balancer_accepted_total \(counters.accepted)\n"
        family("switchboard_balancer_tunnels_total", "counter", "Tunnels established to a node.")
        out += "switchboard_balancer_tunnels_total \(counters.tunnels)\n"
        family(
            "switchboard_balancer_ended_before_response_total", "counter",
            "Tunnels a node closed or reset before answering; a GET then goes to another node, anything else gets 502.")
        out += "switchboard_balancer_ended_before_response_total \(counters.endedBeforeResponse)\n"
        family("switchboard_balancer_tls_handshakes_total", "counter", "Completed TLS handshakes on the client listener.")
        out += "switchboard_balancer_tls_handshakes_total \(counters.tlsHandshakes)\n"
        family("switchboard_balancer_refused_total", "counter", "Clients answered with an error status, by reason.")
        out += "switchboard_balancer_refused_total{reason=\"max_connections\"} \(counters.refusedOverLimit)\n"
        out += "switchboard_balancer_refused_total{reason=\"head_timeout\"} \(counters.headTimeouts)\n"
        out += "switchboard_balancer_refused_total{reason=\"bad_request\"} \(counters.badRequests)\n"
        out += "switchboard_balancer_refused_total{reason=\"no_node\"} \(counters.noNodeAvailable)\n"
        out += "switchboard_balancer_refused_total{reason=\"connect_failed\"} \(counters.connectGaveUp)\n"
        out += "switchboard_balancer_refused_total{reason=\"no_response\"} \(counters.noResponse)\n"
        out += "switchboard_balancer_refused_total{reason=\"local_resources\"} \(counters.localResources)\n"
        family(
            "switchboard_balancer_imbalance_ratio", "gauge",
            "Busiest over emptiest available node: (connections per weight + 1) ratio.")
        out += "switchboard_balancer_imbalance_ratio \(Self.decimal(NodePicker.spread(of: table.candidates(at: now))))\n"
        family(
            "switchboard_balancer_rebalance_picks_total", "counter",
            "Picks made by least connections because the imbalance ratio was over --rebalance-spread (default 1.25) or POST /admin/rebalance asked for it.")
        out += "switchboard_balancer_rebalance_picks_total \(counters.rebalancePicks)\n"
        family("switchboard_balancer_rebalance_requests_total", "counter", "POST /admin/rebalance requests.")
        out += "switchboard_balancer_rebalance_requests_total \(counters.rebalanceRequests)\n"
        family(
            "switchboard_balancer_accept_to_first_byte_seconds", "histogram",
            "Client accept to the node's first byte (for a WebSocket, the 101), per tunnel.")
        out += counters.acceptToFirstByte.exposition("switchboard_balancer_accept_to_first_byte_seconds")
        family("switchboard_balancer_reloads_total", "counter", "SIGHUP configuration reloads, by result.")
        out += "switchboard_balancer_reloads_total{result=\"applied\"} \(counters.reloads)\n"
        out += "switchboard_balancer_reloads_total{result=\"refused\"} \(counters.reloadsRefused)\n"
        let rows = table.memberOrder.compactMap { id in table.entries[id].map { (id, $0) } }
        let perNode: [(String, String, String, (NodeTable.Entry) -> String)] = [
            ("switchboard_balancer_node_connections", "gauge", "Connections open or opening to the node.", { "\($0.active)" }),
            ("switchboard_balancer_node_up", "gauge", "1 when the active health check says up.", { $0.health.isUp ? "1" : "0" }),
            ("switchboard_balancer_node_ejected", "gauge", "1 while passively ejected after connect or server errors.", {
                $0.health.isEjected(at: now) ? "1" : "0"
            }),
            ("switchboard_balancer_node_picks_total", "counter", "Connections sent to the node.", { "\($0.picks)" }),
            ("switchboard_balancer_node_connect_errors_total", "counter", "Failed connects to the node.", { "\($0.connectFailures)" }),
            ("switchboard_balancer_node_server_errors_total", "counter", "First answers that were server errors (5xx but 501, 503, 505).", {
                "\($0.serverErrors)"
            }),
            ("switchboard_balancer_node_ejections_total", "counter", "Passive ejections of the node.", { "\($0.ejections)" }),
            ("switchboard_balancer_node_check_failures_total", "counter", "Failed active health checks.", { "\($0.checksFailed)" }),
            ("switchboard_balancer_node_sent_bytes_total", "counter", "Bytes sent to the node by closed tunnels.", { "\($0.bytesToNode)" }),
            ("switchboard_balancer_node_received_bytes_total", "counter", "Bytes received from the node by closed tunnels.", {
                "\($0.bytesFromNode)"
            }),
            ("switchboard_balancer_node_response_seconds", "gauge", "Moving average of connect to first byte.", {
                $0.responseTime.map(Self.decimal) ?? "NaN"
            }),
        ]
        for (name, type, help, value) in perNode {
            family(name, type, help)
            for (id, entry) in rows {
                out += "\(name){node=\"\(Self.labelValue(id))\"} \(value(entry))\n"
            }
        }
        return ByteBuffer(string: out)
    }

    /// A label value as the exposition format writes it: backslash, double quote and line feed escaped.
    /// Node ids come from the registry, and one with a quote or a line break would otherwise end the
    /// label early and make the whole page unreadable to Prometheus.
    static func labelValue(_ value: String) -> String {
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else {
            return value
        }
        var escaped = ""
        escaped.reserveCapacity(value.utf8.count + 8)
        for character in value.unicodeScalars {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.unicodeScalars.append(character)
            }
        }
        return escaped
    }

    private static func decimal(_ value: Double) -> String {
        guard value.isFinite else { return "0" }
        return String(format: value)
    }
}

extension String {
    /// Six decimal places without Foundation.
    fileprivate init(format value: Double) {
        let micros = Int64((value * 1_000_000).rounded())
        let whole = micros / 1_000_000
        let fraction = abs(micros % 1_000_000)
        let digits = String(fraction)
        self = "\(micros < 0 && whole == 0 ? "-" : "")\(whole).\(String(repeating: "0", count: 6 - digits.count))\(digits)"
    }
}
