/// nginx's smooth weighted round robin: over any window of sum(weights) picks each node is chosen
/// exactly `weight` times, and picks of a heavy node are spread out rather than bunched.
///
/// Each pick adds every candidate's weight to its running score, takes the highest score and subtracts
/// the total weight from it. Scores are keyed by node identity, so a node that leaves the candidate set
/// (unhealthy) and returns keeps its place; scores of nodes gone from the set are dropped.
public struct SmoothWeightedRoundRobin: Sendable {
    private var scores: [String: Int] = [:]

    public init() {}

    /// The index in `candidates` of the node to use, or nil when there is none.
    public mutating func pick(from candidates: [PickCandidate]) -> Int? {
        guard !candidates.isEmpty else { return nil }
        if self.scores.count > candidates.count {
            let ids = Set(candidates.map(\.id))
            self.scores = self.scores.filter { ids.contains($0.key) }
        }
        var total = 0
        var best = 0
        var bestScore = Int.min
        for (index, candidate) in candidates.enumerated() {
            let score = self.scores[candidate.id, default: 0] + candidate.weight
            self.scores[candidate.id] = score
            total += candidate.weight
            if score > bestScore {
                best = index
                bestScore = score
            }
        }
        self.scores[candidates[best].id] = bestScore - total
        return best
    }
}
