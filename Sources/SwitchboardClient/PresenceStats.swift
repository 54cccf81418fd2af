/// A channel's presence counts.
public struct PresenceStats: Sendable, Hashable {
    /// Connections subscribed.
    public var clients: Int
    /// Distinct users among them.
    public var users: Int
}
