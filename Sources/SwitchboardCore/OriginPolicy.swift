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

    /// Whether `pattern` is one this policy can match (`*`, or `scheme://host[:port]` with an optional
    /// `*.` before the host): a configuration check, since a pattern that cannot parse admits nothing.
    public static func isValidPattern(_ pattern: String) -> Bool {
        pattern == "*" || Self.split(pattern.lowercased(), isPattern: true) != nil
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
            guard let wanted = Self.split(pattern, isPattern: true), wanted.scheme == parsed.scheme, wanted.port == parsed.port else { continue }
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
    /// `isPattern` also admits a host starting with `*.`.
    static func split(_ origin: String, isPattern: Bool = false) -> (scheme: Substring, host: Substring, port: Int)? {
        guard let range = origin.range(of: "://") else { return nil }
        let scheme = origin[..<range.lowerBound]
        let defaultPort: Int
        switch scheme {
        case "http", "ws": defaultPort = 80
        case "https", "wss": defaultPort = 443
        default: return nil
        }
        let rest = origin[range.upperBound...]
        guard !rest.contains("/"), let authority = splitAuthority(rest, defaultPort: defaultPort, isPattern: isPattern) else { return nil }
        return (scheme == "ws" ? "http" : scheme == "wss" ? "https" : scheme, authority.host, authority.port)
    }

    /// `host[:port]` (IPv6 in brackets) with `defaultPort` when no port is written; nil for anything
    /// else, strictly: a browser serializes an origin as ASCII (an IDN host in punycode), with no
    /// userinfo, path or empty port, so a host is letters, digits, `-`, `.` and `_` (or hex digits,
    /// `:` and `.` in brackets) and a port is 1-5 digits, without a sign or a leading zero.
    static func splitAuthority(_ text: some StringProtocol, defaultPort: Int, isPattern: Bool = false) -> (host: Substring, port: Int)? {
        let text = Substring(text)
        guard !text.isEmpty, text.utf8.count <= 300 else { return nil }
        let host: Substring
        let portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[...close]
            let inside = host.utf8.dropFirst().dropLast()
            guard !inside.isEmpty, inside.allSatisfy(Self.isIPv6LiteralByte) else { return nil }
            let after = text[text.index(after: close)...]
            if after.isEmpty {
                portText = nil
            } else {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
        } else if let colon = text.firstIndex(of: ":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            host = text
            portText = nil
        }
        guard !host.isEmpty else { return nil }
        if !host.hasPrefix("[") {
            let name = isPattern && host.hasPrefix("*.") ? host.dropFirst(2) : host
            guard !name.isEmpty, name.utf8.allSatisfy(Self.isHostByte) else { return nil }
        }
        guard let portText else { return (host, defaultPort) }
        guard (1...5).contains(portText.utf8.count), portText.utf8.first != UInt8(ascii: "0"),
            portText.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let port = Int(portText), (1...65535).contains(port)
        else { return nil }
        return (host, port)
    }

    private static func isHostByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"):
            true
        default:
            false
        }
    }

    private static func isIPv6LiteralByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: ":"), UInt8(ascii: "."):
            true
        default:
            false
        }
    }
}
