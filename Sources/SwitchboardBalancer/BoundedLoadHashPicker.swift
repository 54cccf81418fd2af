/// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam): a key goes to its ring owner
/// unless that node already holds more than `balanceFactor` × its fair share of connections, in which
/// case the walk continues clockwise to the first node under its bound.
///
/// A node's bound is ceil(factor × (total active + 1) × weight ÷ total weight), so after any pick no
/// node holds more than factor × its weighted mean + 1, however hot one key is. The ring is rebuilt only
/// when the candidate set (identities and weights) changes.
public struct BoundedLoadHashPicker: Sendable {
    /// Bound on a node's load relative to its fair share: 1.25 is HAProxy's `hash-balance-factor 125`.
    public var balanceFactor: Double
    private var ring = HashRing(nodes: [])
    private var ringSignature: [PickCandidateSignature] = []

    private struct PickCandidateSignature: Hashable, Sendable {
        var id: String
        var weight: Int
    }

    /// `balanceFactor` is clamped to at least 1.0 (1.0 = perfectly even, keys move most).
    public init(balanceFactor: Double = 1.25) {
        self.balanceFactor = balanceFactor.isFinite ? max(1.0, balanceFactor) : 1.25
    }

    /// The index in `candidates` of the node for `keyHash`, or nil when there is none.
    public mutating func pick(from candidates: [PickCandidate], keyHash: UInt64) -> Int? {
        guard !candidates.isEmpty else { return nil }
        let signature = candidates.map { PickCandidateSignature(id: $0.id, weight: $0.weight) }
        if signature != self.ringSignature {
            self.ring = HashRing(nodes: candidates.map { ($0.id, $0.weight) })
            self.ringSignature = signature
        }
        let totalActive = candidates.reduce(0) { $0 + $1.active }
        let totalWeight = candidates.reduce(0) { $0 + $1.weight }
        let order = self.ring.walk(from: keyHash)
        for index in order {
            let candidate = candidates[index]
            let fair = Double(totalActive + 1) * Double(candidate.weight) / Double(totalWeight)
            let bound = (self.balanceFactor * fair).rounded(.up)
            if Double(candidate.active) < bound { return index }
        }
        return order.first
    }

    /// Where `keyHash` goes when every node is idle (the ring owner), for tests and diagnostics.
    public mutating func owner(among candidates: [PickCandidate], keyHash: UInt64) -> String? {
        let idle = candidates.map { PickCandidate(id: $0.id, weight: $0.weight, active: 0) }
        return self.pick(from: idle, keyHash: keyHash).map { candidates[$0].id }
    }
}
