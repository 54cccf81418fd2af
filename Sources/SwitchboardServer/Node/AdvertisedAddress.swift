import NIOCore

/// The address a node announces in the broker's registry, from `serve --advertise HOST[:PORT]`, in
/// place of the address it is bound to.
///
/// A node bound to all interfaces (`0.0.0.0`, `::`: the usual case in a container) or reached through
/// NAT cannot name itself from its socket, and `switchboard balance --registry` skips a wildcard
/// address. `HOST` is an IP address or a host name the balancer resolves; without `:PORT` the bound
/// port is announced (`--port 0` still works).
public struct AdvertisedAddress: Sendable, Hashable, CustomStringConvertible {
    /// IP literal (IPv6 without brackets) or host name.
    public var host: String
    /// Nil: the port the node is bound to.
    public var port: Int?

    /// Longest host name (RFC 1035).
    static let maximumHostLength = 253

    /// Parses `HOST`, `HOST:PORT`, `[IPv6]` or `[IPv6]:PORT` (a bare IPv6 literal without a port is
    /// taken whole). Refuses wildcard addresses, ports outside 1-65535, and hosts that are neither an IP
    /// literal nor a host name of letters, digits, `-` and `.` (labels of 1-63 bytes, 253 in all).
    public static func parse(_ text: String) throws(ConfigurationError) -> AdvertisedAddress {
        let bad = ConfigurationError("advertise must be HOST or HOST:PORT (an IP address or host name, port 1-65535), not \(text.prefix(300))")
        guard !text.isEmpty, text.utf8.count <= maximumHostLength + 8 else { throw bad }
        var host = Substring(text)
        var portText: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { throw bad }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw bad }
                portText = rest.dropFirst()
            }
            guard host.contains(":") else { throw bad }
        } else if host.filter({ $0 == ":" }).count == 1, let colon = host.firstIndex(of: ":") {
            portText = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        var port: Int?
        if let portText {
            guard portText.count <= 5, let p = Int(portText), (1...65535).contains(p) else { throw bad }
            port = p
        }
        let name = String(host)
        // IP literals as the system parses them (inet_pton), so `::0` is seen to be `::`.
        let literal = (try? SocketAddress(ipAddress: name, port: 0))?.ipAddress
        guard literal != nil || (!name.contains(":") && Self.isHostName(name)) else { throw bad }
        guard literal != "0.0.0.0" && literal != "::" else {
            throw ConfigurationError("advertise: \(name) is a wildcard address, which no balancer can connect to")
        }
        return AdvertisedAddress(host: name, port: port)
    }

    /// `host:port` as the registry carries it (IPv6 in brackets), with `boundPort` when none was given.
    public func registryAddress(boundPort: Int) -> String {
        let port = self.port ?? boundPort
        return self.host.contains(":") ? "[\(self.host)]:\(port)" : "\(self.host):\(port)"
    }

    public var description: String {
        guard let port else { return self.host.contains(":") ? "[\(self.host)]" : self.host }
        return self.registryAddress(boundPort: port)
    }

    private static func isHostName(_ text: String) -> Bool {
        guard text.utf8.count <= maximumHostLength, !text.allSatisfy({ $0.isASCIIDigit || $0 == "." }) else { return false }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            label.utf8.count >= 1 && label.utf8.count <= 63 && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { self.isASCII && self.isNumber }
}
