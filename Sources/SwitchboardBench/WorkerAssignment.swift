/// A worker process's share of a run, set by the coordinator.
public struct WorkerAssignment: Sendable, Codable, Hashable {
    public enum Role: String, Sendable, Codable {
        /// Everything: the connections of connect/idle, or subscribers and publishers in one process.
        case all
        /// fanout: subscribers only.
        case subscribers
        /// fanout: publishers only.
        case publishers
    }

    public var role: Role
    /// Global index of this process's first connection (channel assignment).
    public var indexBase: Int
    /// Wall-clock origin of the time series, shared by all processes so their seconds line up.
    public var seriesEpochNanoseconds: Int64
    /// Which worker this is (for messages).
    public var processIndex: Int
    /// Connections (subscribers) of the whole run, over all processes.
    public var totalConnections: Int
}
