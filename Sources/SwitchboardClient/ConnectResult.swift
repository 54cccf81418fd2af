import SwitchboardCore

/// What a node said when it took a connection.
public struct ConnectResult: Sendable, Hashable {
    /// The id the node gave this connection (a new one on every connection).
    public var client: String
    /// The node's id.
    public var node: String
    /// The user of the connection token; empty for an anonymous client.
    public var user: String
    /// The node's version.
    public var version: String
    /// Seconds between the node's pings (0: it does not ping).
    public var pingInterval: Double
    /// Whether the node expects an answer to its pings.
    public var pong: Bool
    /// Seconds until the connection token expires (nil: it does not). With `getToken`, the client
    /// sends a new token (`refresh`) before then.
    public var tokenTTL: Int?
    /// The transport this connection uses (WebSocket, or the fallback the client moved to).
    public var transport: ClientTransport

    init(json: JSONObject, transport: ClientTransport = .webSocket) {
        self.transport = transport
        self.client = json["client"]?.stringValue ?? ""
        self.node = json["node"]?.stringValue ?? ""
        self.user = json["user"]?.stringValue ?? ""
        self.version = json["version"]?.stringValue ?? ""
        self.pingInterval = json["ping"]?.doubleValue ?? 0
        self.pong = json["pong"]?.boolValue ?? false
        self.tokenTTL = json["expires"]?.boolValue == true ? json["ttl"]?.intValue : nil
    }
}
