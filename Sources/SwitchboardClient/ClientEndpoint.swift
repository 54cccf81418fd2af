/// Where a client connects: a node's (or a balancer's) `/ws`, from a URL.
///
/// `ws://host[:port]/path` and `wss://…` are taken as they are; `http(s)://host[:port][/prefix]`
/// is a node's base URL, whose WebSocket endpoint is `prefix/ws` (what the browser client takes).
/// The SSE stream is at `sse` beside the WebSocket endpoint (`prefix/sse`).
public struct ClientEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// The host name or address (IPv6 without brackets).
    public var host: String
    public var port: Int
    /// The request target of the handshake (`/ws`, with any query).
    public var path: String
    /// Whether the connection uses TLS (`wss`, `https`).
    public var usesTLS: Bool
    /// The path of the SSE stream and its command POSTs (`/sse`): by default `sse` in place of the
    /// WebSocket path's last segment `ws`, or under the path when it ends otherwise.
    public var ssePath: String

    /// `ssePath` nil: derived from `path`.
    public init(host: String, port: Int, path: String = "/ws", usesTLS: Bool = false, ssePath: String? = nil) {
        self.host = host
        self.port = port
        self.path = path
        self.usesTLS = usesTLS
        self.ssePath = ssePath ?? Self.ssePath(besideWebSocketPath: path)
    }

    /// Long-polling's poll path: `poll` beside the SSE stream (`/sse` -> `/poll`).
    var pollPath: String { Self.sibling(of: self.ssePath, named: "poll") }

    /// Long-polling's command path: `rpc` beside the SSE stream (`/sse` -> `/rpc`).
    var rpcPath: String { Self.sibling(of: self.ssePath, named: "rpc") }

    static func sibling(of ssePath: String, named name: String) -> String {
        ssePath.hasSuffix("/sse") ? String(ssePath.dropLast(3)) + name : ssePath + "/" + name
    }

    /// `/ws` -> `/sse`, `/app/ws?x=1` -> `/app/sse`, `/` -> `/sse`, `/socket` -> `/socket/sse`.
    static func ssePath(besideWebSocketPath path: String) -> String {
        var base = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        if base == "/ws" || base.hasSuffix("/ws") { base.removeLast(2) }
        while base.hasSuffix("/") { base.removeLast() }
        return base + "/sse"
    }

    /// Parses `url`; nil when it is not a `ws`, `wss`, `http` or `https` URL with a host.
    public init?(_ url: String) {
        guard let colon = url.firstIndex(of: ":"), url[colon...].hasPrefix("://") else { return nil }
        let scheme = url[..<colon].lowercased()
        let isWebSocket: Bool
        switch scheme {
        case "ws", "http": self.usesTLS = false
        case "wss", "https": self.usesTLS = true
        default: return nil
        }
        isWebSocket = scheme.hasPrefix("ws")
        let rest = url[url.index(colon, offsetBy: 3)...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var target = String(rest[authorityEnd...])
        if let fragment = target.firstIndex(of: "#") { target = String(target[..<fragment]) }
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        let hostPart: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            hostPart = authority
        }
        guard !hostPart.isEmpty else { return nil }
        self.host = String(hostPart)
        if let portText {
            guard let port = Int(portText), (1...65535).contains(port) else { return nil }
            self.port = port
        } else {
            self.port = self.usesTLS ? 443 : 80
        }
        if isWebSocket {
            self.path = target.isEmpty ? "/" : (target.hasPrefix("?") ? "/" + target : target)
        } else {
            // A base URL: its WebSocket endpoint is `/ws` under its path (a query is dropped).
            var prefix = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            while prefix.hasSuffix("/") { prefix.removeLast() }
            self.path = prefix + "/ws"
        }
        self.ssePath = Self.ssePath(besideWebSocketPath: self.path)
    }

    /// The `Host` header: the host, bracketed when IPv6, with the port when it is not the default.
    var hostHeader: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return self.port == (self.usesTLS ? 443 : 80) ? host : "\(host):\(self.port)"
    }

    public var description: String {
        "\(self.usesTLS ? "wss" : "ws")://\(self.hostHeader)\(self.path)"
    }
}
