/// Limits that need to know who a client is (the `limits` object of the config file).
public struct ClientLimits: Hashable, Sendable {
    /// Connections one user may hold at once; 0: no cap. (Not enforced yet: see docs/security.md.)
    public var connectionsPerUser: Int = 0
    /// New connections one address may open per second; 0: no cap. (Not enforced yet: see docs/security.md.)
    public var connectsPerIPPerSecond: Int = 0
    /// Commands per second one connection may send (token bucket refill).
    public var commandsPerSecond: Double = 100
    /// Commands one connection may send in a burst (token bucket size).
    public var commandBurst: Double = 200

    public init() {}
}
