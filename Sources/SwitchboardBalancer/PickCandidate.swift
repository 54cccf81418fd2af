/// What a picker knows of one eligible node at the moment of a pick.
public struct PickCandidate: Hashable, Sendable {
    /// The node's identity (`BackendNode.id`).
    public var id: String
    /// Relative share, at least 1.
    public var weight: Int
    /// Connections open (or being opened) to the node now.
    public var active: Int
    /// Moving average of the node's response time in seconds (connect to first byte back), if measured.
    public var responseTime: Double?

    public init(id: String, weight: Int, active: Int, responseTime: Double? = nil) {
        self.id = id
        self.weight = max(1, weight)
        self.active = max(0, active)
        self.responseTime = responseTime
    }

    /// True when `self` carries less load per unit of weight than `other` (active/weight, compared without division).
    func isLessLoaded(than other: PickCandidate) -> Bool {
        self.active * other.weight < other.active * self.weight
    }
}
