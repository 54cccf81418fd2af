/// How a client reaches a node: the order of `SwitchboardClientConfiguration.transports` is the
/// order in which they are tried (see `TransportLadder` for when the client moves on).
public enum ClientTransport: String, Sendable, Hashable, CaseIterable {
    /// One WebSocket connection (`GET /ws`, upgraded): commands and messages on the same socket.
    case webSocket = "websocket"
    /// Server-sent events: a `POST /sse` stream carries every message from the node, and commands
    /// go as `POST /sse?session=…` requests (any node takes them). For networks whose proxies
    /// refuse or cut WebSocket upgrades but pass a streamed HTTP response.
    case sse
}
