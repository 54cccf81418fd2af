/// Least connections: the node with the fewest open connections per unit of weight.
///
/// Ties rotate (the scan starts one further each pick), so equal nodes share a burst of new connections
/// rather than the first one taking it all.
public struct LeastConnectionsPicker: Sendable {
    private var rotation = 0

    public init() {}

    /// The index in `candidates` of the node to use, or nil when there is none.
    public mutating func pick(from candidates: [PickCandidate]) -> Int? {
        guard !candidates.isEmpty else { return nil }
        let start = self.rotation % candidates.count
        self.rotation = (self.rotation &+ 1) & Int.max
        var best = start
        for step in 1..<candidates.count {
            let index = (start + step) % candidates.count
            if candidates[index].isLessLoaded(than: candidates[best]) { best = index }
        }
        return best
    }
}
