/// A `ws://` URL on the loopback interface.
///
/// The bench only ever talks to this machine: parsing refuses any host that
/// is not `localhost`, an IPv4 address in 127.0.0.0/8, or `::1`, so a typo
/// cannot aim a load test at someone else's server.
public struct BenchURL: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The host as written, without IPv6 brackets (`127.0.0.1`, `::1`, `localhost`).
    public let host: String
    public let port: Int
    /// Path and query, starting with `/`.
    public let path: String

    /// Parses `ws://HOST[:PORT][/PATH]`; the port defaults to 80, the path to `/ws`.
    public init(_ string: String) throws(BenchError) {
        var rest = Substring(string)
        guard rest.lowercased().hasPrefix("ws://") else {
            if rest.lowercased().hasPrefix("wss://") {
                throw BenchError(.invalidConfiguration, "\(string): wss:// is not supported (loopback only, no TLS)")
            }
            throw BenchError(.invalidConfiguration, "\(string): expected a ws:// URL")
        }
        rest = rest.dropFirst(5)
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        let pathPart = rest.dropFirst(authority.count)
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw BenchError(.invalidConfiguration, "\(string): unbalanced [ in the host")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty {
                throw BenchError(.invalidConfiguration, "\(string): unexpected text after the host")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        if host.contains("@") {
            throw BenchError(.invalidConfiguration, "\(string): user info is not supported")
        }
        guard !host.isEmpty else { throw BenchError(.invalidConfiguration, "\(string): no host") }
        var port = 80
        if let portText {
            guard let value = Int(portText), (1...65_535).contains(value) else {
                throw BenchError(.invalidConfiguration, "\(string): bad port \(portText)")
            }
            port = value
        }
        self.host = String(host)
        self.port = port
        self.path = pathPart.isEmpty ? "/ws" : (pathPart.hasPrefix("/") ? String(pathPart) : "/" + pathPart)
        guard Self.isLoopback(host: self.host) else {
            throw BenchError(
                .notLoopback,
                "refusing \(string): \(self.host) is not a loopback address (switchboard-bench only targets 127.0.0.0/8, ::1 or localhost)"
            )
        }
    }

    /// Whether `host` names this machine's loopback interface.
    public static func isLoopback(host: String) -> Bool {
        let lowered = host.lowercased()
        if lowered == "localhost" || lowered == "::1" || lowered == "0:0:0:0:0:0:0:1" { return true }
        guard let octets = IPv4.parse(lowered) else { return false }
        return octets.0 == 127
    }

    /// The address to connect to (`localhost` means 127.0.0.1).
    var ipAddress: String {
        self.host.lowercased() == "localhost" ? "127.0.0.1" : self.host
    }

    var isIPv6: Bool { self.host.contains(":") }

    /// The `Host` header value.
    var hostHeader: String {
        let host = self.isIPv6 ? "[\(self.host)]" : self.host
        return self.port == 80 ? host : "\(host):\(self.port)"
    }

    public var description: String { "ws://\(self.hostHeader)\(self.path)" }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do {
            self = try BenchURL(text)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.message))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.description)
    }
}

/// Dotted-quad IPv4 arithmetic for source address blocks.
enum IPv4 {
    static func parse(_ text: String) -> (UInt8, UInt8, UInt8, UInt8)? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var values: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), let value = UInt8(part) else { return nil }
            values.append(value)
        }
        return (values[0], values[1], values[2], values[3])
    }

    static func value(_ text: String) -> UInt32? {
        guard let o = parse(text) else { return nil }
        return UInt32(o.0) << 24 | UInt32(o.1) << 16 | UInt32(o.2) << 8 | UInt32(o.3)
    }

    static func text(_ value: UInt32) -> String {
        "\(value >> 24).\((value >> 16) & 0xFF).\((value >> 8) & 0xFF).\(value & 0xFF)"
    }
}
