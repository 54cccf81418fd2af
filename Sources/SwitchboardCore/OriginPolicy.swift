import Foundation

/// Which web pages may open a connection: a pure matcher of the `Origin` header against
/// `allowedOrigins` patterns.
///
/// - Requests without `Origin` (non-browser clients) are always admitted.
/// - An empty list admits those whose `Origin` names the same host and port as `Host` (the node's
///   own demo page); other sites' pages not.
/// - A pattern is `scheme://host[:port]`, where the host may start with `*.` to match any
///   subdomain (one label or more, not the bare domain): `https://*.example.com`.
/// - `*` admits every origin (the node warns at start).
/// Everything is compared lowercased; `Origin: null` matches nothing but `*`.
public struct OriginPolicy: Hashable, Sendable {
    /// The patterns, lowercased.
    public let patterns: [String]

    public init(_ patterns: [String]) {
        self.patterns = patterns.map { $0.lowercased() }
    }

    /// Whether any origin is admitted (`*` in the list): worth a warning at start.
    public var admitsEveryOrigin: Bool { self.patterns.contains("*") }

    /// Whether a request with this `Origin` (nil: none) and `Host` header is admitted.
    public func admits(origin: String?, host: String?) -> Bool {
        // No Origin: not a browser page (browsers send it on every WebSocket upgrade and cross-site
        // request), so there is no page to protect from: admitted, as Centrifugo does.
        guard let origin else { return true }
        if self.admitsEveryOrigin { return true }
        let lowered = origin.lowercased()
        guard let parsed = Self.split(lowered) else { return false }
        if self.patterns.isEmpty {
            guard let host, let hostPart = Self.splitAuthority(host.lowercased(), defaultPort: parsed.port) else { return false }
            return hostPart.host == parsed.host && hostPart.port == parsed.port
        }
        for pattern in self.patterns {
            guard let wanted = Self.split(pattern), wanted.scheme == parsed.scheme, wanted.port == parsed.port else { continue }
            if wanted.host.hasPrefix("*.") {
                let suffix = wanted.host.dropFirst(1)  // ".example.com"
                if parsed.host.hasSuffix(suffix), parsed.host.utf8.count > suffix.utf8.count { return true }
            } else if wanted.host == parsed.host {
                return true
            }
        }
        return false
    }

    /// `scheme://host[:port]` with the scheme's default port filled in; nil when not of that shape.
    static func split(_ origin: String) -> (scheme: Substring, host: Substring, port: Int)? {
        guard let range = origin.range(of: "://") else { return nil }
        let scheme = origin[..<range.lowerBound]
        let defaultPort: Int
        switch scheme {
        case "http", "ws": defaultPort = 80
        case "https", "wss": defaultPort = 443
        default: return nil
        }
        let rest = origin[range.upperBound...]
        guard !rest.contains("/"), let authority = splitAuthority(rest, defaultPort: defaultPort) else { return nil }
        return (scheme == "ws" ? "http" : scheme == "wss" ? "https" : scheme, authority.host, authority.port)
    }

    /// `host[:port]` (IPv6 in brackets) with `defaultPort` when no port is written.
    static func splitAuthority(_ text: some StringProtocol, defaultPort: Int) -> (host: Substring, port: Int)? {
        let text = Substring(text)
        guard !text.isEmpty, text.utf8.count <= 300 else { return nil }
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = text[...close]
            let after = text[text.index(after: close)...]
            if after.isEmpty { return (host, defaultPort) }
            guard after.hasPrefix(":"), let port = Int(after.dropFirst()), (1...65535).contains(port) else { return nil }
            return (host, port)
        }
        if let colon = text.lastIndex(of: ":") {
            guard let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
            let host = text[..<colon]
            return host.isEmpty ? nil : (host, port)
        }
        return (text, defaultPort)
    }
}
