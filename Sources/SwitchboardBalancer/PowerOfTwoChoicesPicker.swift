/// Power of two random choices (the default): draw two distinct nodes at random in proportion to their
/// weights and take the one with fewer connections per unit of weight.
///
/// Almost as even as least connections, without its herd: a freshly joined, empty node is not handed
/// every new connection at once (each pick only sees it when the draw includes it).
public struct PowerOfTwoChoicesPicker: Sendable {
    public init() {}

    /// The index in `candidates` of the node to use, or nil when there is none.
    public func pick(from candidates: [PickCandidate], using generator: inout some RandomNumberGenerator) -> Int? {
        switch candidates.count {
        case 0: return nil
        case 1: return 0
        default: break
        }
        let total = candidates.reduce(0) { $0 + $1.weight }
        let first = Self.weightedDraw(candidates, total: total, excluding: nil, using: &generator)
        let second = Self.weightedDraw(
            candidates, total: total - candidates[first].weight, excluding: first, using: &generator)
        if candidates[second].isLessLoaded(than: candidates[first]) { return second }
        if candidates[first].isLessLoaded(than: candidates[second]) { return first }
        return Bool.random(using: &generator) ? first : second
    }

    private static func weightedDraw(
        _ candidates: [PickCandidate], total: Int, excluding: Int?, using generator: inout some RandomNumberGenerator
    ) -> Int {
        var ticket = Int.random(in: 0..<max(1, total), using: &generator)
        for (index, candidate) in candidates.enumerated() where index != excluding {
            if ticket < candidate.weight { return index }
            ticket -= candidate.weight
        }
        return candidates.indices.last(where: { $0 != excluding }) ?? 0
    }
}
