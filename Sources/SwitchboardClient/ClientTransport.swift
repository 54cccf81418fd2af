/// How a client reaches a node: the order of `SwitchboardClientConfiguration.transports` is the
/// order in which they are tried (see `TransportLadder` for when the client moves on).
public enum ClientTransport: String, Sendable, Hashable, CaseIterable {
    /// One WebSocket connection (`GET /ws`, upgraded): commands and messages on the same socket.
    case webSocket = "websocket"
    /// Server-sent events: a `POST /sse` stream carries every message from the node, and commands
    /// go as `POST /sse?session=…` requests (any node takes them). For networks whose proxies
    /// refuse or cut WebSocket upgrades but pass a streamed HTTP response.
    case sse
    /// Long-polling: `POST /poll` with every channel and its position, answered with what is new
    /// (or after a timeout), and commands as `POST /rpc`; nothing is kept on a node between polls.
    /// For proxies that buffer whole responses (which defeats SSE). Presence does not list such a
    /// client, and channels without history may lose publications between polls.
    case longPolling = "longpoll"
}
