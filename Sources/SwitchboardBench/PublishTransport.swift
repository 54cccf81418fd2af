/// How publishers send: as WebSocket clients, or through the HTTP server API.
public enum PublishTransport: String, Sendable, Codable, CaseIterable {
    case websocket
    case api
}
