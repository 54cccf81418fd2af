public import NIOCore
public import NIOSSL

/// How a `SwitchboardClient` connects and behaves.
public struct SwitchboardClientConfiguration: Sendable {
    /// The node or balancer to connect to.
    public var endpoint: ClientEndpoint
    /// The connection token (`connect.token`); nil for an anonymous client.
    public var token: String?
    /// Asked for a connection token before every connection attempt, when set (and then `token` is
    /// not used). With it, an expired token (close 3503) makes the client reconnect with a new one
    /// instead of stopping. A thrown error counts as a failed attempt (retried after the backoff).
    public var getToken: (@Sendable () async throws -> String)?
    /// The client's name, sent in `connect`.
    public var name = "switchboard-swift"
    /// The first reconnect delay's cap (attempt n waits a random time below min(max, min × 2ⁿ)).
    public var minimumReconnectDelay: TimeAmount = .milliseconds(500)
    /// The largest reconnect delay.
    public var maximumReconnectDelay: TimeAmount = .seconds(20)
    /// An attempt with no connect reply by then has failed.
    public var connectTimeout: TimeAmount = .seconds(10)
    /// How long a request (publish, history, presence, …) may wait for its answer, time spent
    /// waiting for a connection included. Also how long a `subscribe` sent on a connection waits for
    /// its answer: then it is given up (its late answer ignored), unsubscribed, and made again from
    /// the channel's position after the retry delay, on the same connection.
    public var requestTimeout: TimeAmount = .seconds(20)
    /// How long past the node's ping interval (its connect result's `ping`) a connection may stay
    /// silent before the client takes it for dead and reconnects (a node or network that stalled
    /// without closing anything).
    public var silenceGrace: TimeAmount = .seconds(10)
    /// When the node sends no pings (its `ping` is 0), the client asks (a `ping` command) after this
    /// long without hearing from it, over WebSocket and SSE, and takes the connection for dead when
    /// nothing comes within `silenceGrace`: a hung node or network is found without the node's
    /// pings too. Zero turns it off.
    public var idlePingInterval: TimeAmount = .seconds(25)
    /// The node's `maxMessageSize`: a command larger than this is refused before it is sent (the
    /// node would close the connection with 1009).
    public var maximumMessageSize = 65_536
    /// The largest message accepted from the node (a history answer can be large).
    public var maximumIncomingMessageSize = 16 << 20
    /// Most requests waiting for a connection; more fail at once (`invalidRequest`).
    public var maximumQueuedRequests = 10_000
    /// Most events a subscription holds for the app before it reads them. One more ends the
    /// subscription with `.ended(code: ClientSubscription.unreadEventsCode, …)` (after the events
    /// already held) instead of holding without bound what a stalled reader leaves; subscribe again
    /// `since:` the last position read to get the rest from the channel's history.
    public var maximumBufferedEvents = 10_000
    /// The transports to use, in order of preference: the client falls back to the next when one
    /// cannot open (a proxy refuses the WebSocket upgrade) or fails twice in a row without a connect
    /// reply, and keeps the one that worked.
    public var transports: [ClientTransport] = [.webSocket, .sse, .longPolling]
    /// How long a long-poll waits on the node when there is nothing new (0 to 60 s).
    public var pollTimeout: TimeAmount = .seconds(25)
    /// While connected over a fallback transport, how often (±25 %) the client tries a bare
    /// WebSocket handshake; when it opens, the client reconnects over WebSocket (subscriptions resume
    /// from their positions). Zero: never.
    public var upgradeInterval: TimeAmount = .seconds(60)
    /// TLS settings for `wss` endpoints (the host name is verified against the certificate).
    public var tls = TLSConfiguration.makeClientConfiguration()

    /// A configuration for `url` (`ws://127.0.0.1:8000/ws`, or a node's base `http(s)://` URL).
    public init(url: String, token: String? = nil) throws {
        guard let endpoint = ClientEndpoint(url) else { throw ClientError.invalidRequest("not a ws, wss, http or https URL: \(url)") }
        self.endpoint = endpoint
        self.token = token
    }

    public init(endpoint: ClientEndpoint, token: String? = nil) {
        self.endpoint = endpoint
        self.token = token
    }
}
