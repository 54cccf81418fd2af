/// Limits that need to know who a client is (the `limits` object of the config file).
public struct ClientLimits: Hashable, Sendable {
    /// Connections one user may hold at once on this node (the one over it closes 3504); 0: no cap.
    public var connectionsPerUser: Int = 0
    /// New connections one address may open per second (over it: 503 with `Retry-After` before the
    /// upgrade and any token work); 0: no cap. Trusted proxies' addresses are exempt.
    public var connectsPerIPPerSecond: Int = 0
    /// Commands per second one connection may send (token bucket refill). The default is twice the
    /// fastest per-connection rate `switchboard-bench` drives by default (its latency publisher,
    /// 1,000/s), so benchmarks are never throttled; a flood (10k/s) is still closed with 3507 in
    /// milliseconds. Public deployments should lower it (issue 13 suggests 100, burst 200).
    public var commandsPerSecond: Double = 2000
    /// Commands one connection may send in a burst (token bucket size).
    public var commandBurst: Double = 4000

    public init() {}
}
