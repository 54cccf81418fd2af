/// One node the balancer can send connections to: where it listens and its share of new connections.
///
/// A node's identity is its address (`host:port`): counters, health and ring points are keyed by it, so a
/// node that leaves and comes back under the same address finds its open connections still counted.
public struct BackendNode: Hashable, Sendable, CustomStringConvertible {
    /// Host name or IP address to connect to (IPv6 without brackets).
    public let host: String
    /// TCP port, 1-65535.
    public let port: Int
    /// `host:port`, with IPv6 hosts in brackets: the node's identity. Made once: tables are keyed by it
    /// several times per proxied connection.
    public let id: String
    /// Relative share of new connections, 1-100 (default 1).
    public var weight: Int

    /// Largest accepted weight: keeps ring sizes and weighted arithmetic small.
    public static let maximumWeight = 100

    public init(host: String, port: Int, weight: Int = 1) {
        self.host = host
        self.port = port
        self.weight = weight
        self.id = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public var description: String { self.weight == 1 ? self.id : "\(self.id),weight=\(self.weight)" }

    /// Parses `HOST:PORT` or `HOST:PORT,weight=N` (`[v6]:PORT` for IPv6).
    public static func parse(_ text: String) throws(BalancerConfigurationError) -> BackendNode {
        var address = Substring(text)
        var weight = 1
        if let comma = text.firstIndex(of: ",") {
            address = text[..<comma]
            let option = text[text.index(after: comma)...]
            guard option.hasPrefix("weight="), let w = Int(option.dropFirst("weight=".count)),
                (1...maximumWeight).contains(w)
            else {
                throw BalancerConfigurationError("node \(text): expected HOST:PORT or HOST:PORT,weight=1-\(maximumWeight)")
            }
            weight = w
        }
        guard let colon = address.lastIndex(of: ":") else {
            throw BalancerConfigurationError("node \(text): expected HOST:PORT")
        }
        var host = address[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty, host.count <= 255, let port = Int(address[address.index(after: colon)...]),
            (1...65535).contains(port)
        else {
            throw BalancerConfigurationError("node \(text): expected HOST:PORT with a port within 1-65535")
        }
        return BackendNode(host: String(host), port: port, weight: weight)
    }
}

/// A configuration value the balancer cannot use; the message names the option and the reason.
public struct BalancerConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }
}
