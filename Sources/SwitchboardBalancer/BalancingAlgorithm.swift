/// How the balancer chooses a node for a new client connection.
public enum BalancingAlgorithm: String, Sendable, Hashable, CaseIterable {
    /// Smooth weighted round robin.
    case roundRobin = "round-robin"
    /// Fewest open connections per unit of weight.
    case leastConnections = "least-conn"
    /// Power of two random choices (the default).
    case powerOfTwoChoices = "p2c"
    /// Lowest (active + 1) × response time ÷ weight.
    case leastTime = "least-time"
    /// Consistent hashing with bounded load on `--hash-key`.
    case hash
}

/// What a hashing balancer hashes.
public enum HashKeySource: String, Sendable, Hashable, CaseIterable {
    /// The `channel` query parameter of the request target.
    case channel
    /// The JWT `sub` of the `token` query parameter or of `Authorization: Bearer` (decoded, not verified:
    /// it only routes; the node verifies the token).
    case user
    /// The client's IP address.
    case client
}
