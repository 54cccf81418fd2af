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
    /// Bytes of history one client address may read per second, in `history` answers and
    /// recoveries (refill of a byte bucket charged with what each read returned): a command is cheap
    /// to send and its read can be a megabyte from a shared Redis, so the command rate alone does not
    /// bound what a client costs the broker. 1 MiB/s by default: ten answers of 100 publications of
    /// 1 KB a second.
    public var historyBytesPerSecond: Double = 1_048_576
    /// Bytes of history one client address may read in a burst (16 MiB by default).
    public var historyBurstBytes: Double = 16_777_216

    public init() {}
}
