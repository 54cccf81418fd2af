/// What a request path names: the one route table that the handshake router,
/// the WebSocket upgrader and the HTTP handler all read (docs/transports.md
/// and docs/protocol.md list the endpoints).
enum Route: Hashable {
    case demoPage
    case clientScript
    /// `GET /ws`: the WebSocket endpoint.
    case webSocket
    /// `GET /echo`: the conformance echo endpoint (when enabled).
    case echo
    /// `/sse`: the SSE stream (`GET`) and its commands (`POST`).
    case eventStream
    case poll
    case rpc
    case stats
    case metrics
    case health
    case readiness
    /// `/api/<method>`: the server API.
    case api(method: Substring)
    case unknown

    static let webSocketPath = "/ws"
    static let echoPath = "/echo"

    init(path: Substring) {
        switch path {
        case "/", "/index.html": self = .demoPage
        case "/switchboard.js": self = .clientScript
        case Self.webSocketPath: self = .webSocket
        case Self.echoPath: self = .echo
        case "/sse": self = .eventStream
        case "/poll": self = .poll
        case "/rpc": self = .rpc
        case "/stats": self = .stats
        case "/metrics": self = .metrics
        case "/healthz": self = .health
        case "/readyz": self = .readiness
        default:
            if path.hasPrefix("/api/") {
                self = .api(method: path.dropFirst("/api/".count))
            } else {
                self = .unknown
            }
        }
    }

    /// The route of a request target (the query is not part of it).
    init(uri: String) {
        self.init(path: Self.path(of: uri))
    }

    static func path(of uri: String) -> Substring {
        uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? Substring(uri)
    }

    /// Whether a client may take the route with a WebSocket upgrade.
    func acceptsUpgrade(echoEnabled: Bool) -> Bool {
        switch self {
        case .webSocket: return true
        case .echo: return echoEnabled
        default: return false
        }
    }

    /// Largest request body the route takes: the server API up to `maxRequestBodySize`, the
    /// client transports up to `maxMessageSize`, like one WebSocket message.
    func bodyLimit(_ configuration: ServerConfiguration) -> Int {
        if case .api = self { return configuration.maxRequestBodySize }
        return configuration.maxMessageSize
    }
}
