/// Limits that need to know who a client is (the `limits` object of the config file).
public struct ClientLimits: Hashable, Sendable {
    /// Connections one user may hold at once on this node (the one over it closes 3504); 0: no cap.
    public var connectionsPerUser: Int = 0
    /// New connections one address may open per second (over it: 503 with `Retry-After` before the
    /// upgrade and any token work); 0: no cap. Trusted proxies' addresses are exempt.
    public var connectsPerIPPerSecond: Int = 0
    /// Commands per second one connection may send (token bucket refill): 100 by default, far
    /// above what a chat, dashboard or game client sends, and low enough that one connection cannot
    /// hog a loop. Backends publish through the HTTP API, which this limit does not touch. Benchmarks
    /// that drive one connection harder (`switchboard-bench pingpong`, a WebSocket publisher) start
    /// the node with a higher `--commands-per-second`.
    public var commandsPerSecond: Double = 100
    /// Commands one connection may send in a burst (token bucket size): a reconnect that resubscribes
    /// to many channels at once fits.
    public var commandBurst: Double = 200

    public init() {}
}
