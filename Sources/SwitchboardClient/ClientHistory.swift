public import SwitchboardCore

/// A page of a channel's history.
public struct ClientHistory: Sendable, Hashable {
    /// Oldest first (newest first when asked `reverse`).
    public var publications: [ClientPublication]
    /// The channel's position now.
    public var position: StreamPosition?
}
