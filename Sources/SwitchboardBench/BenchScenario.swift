/// What a run measures.
public enum BenchScenario: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Open N connections at a target rate: handshakes/s, failures, handshake latency.
    case connect
    /// Hold N subscribed connections: the server's resident memory per connection.
    case idle
    /// S subscribers over K channels, publishers at rate R: deliveries/s, loss, latency.
    case fanout
    /// Like fanout, tuned for an unsaturated server: publish-to-deliver percentiles.
    case latency
    /// Fanout with subscribers on some nodes and publishers on others (through the broker).
    case crossNode = "cross-node"
    /// N closed loops: each connection publishes, waits for its own
    /// publication to come back, then publishes again: round trips/s,
    /// round-trip latency, server CPU per round trip.
    case pingpong

    public var description: String { self.rawValue }

    /// Whether the scenario publishes and counts deliveries.
    public var publishes: Bool {
        switch self {
        case .connect, .idle, .pingpong: false
        case .fanout, .latency, .crossNode: true
        }
    }
}
