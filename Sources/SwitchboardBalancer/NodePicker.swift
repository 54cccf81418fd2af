/// The configured algorithm with its state: one value answers "which node?" for every new connection.
///
/// Hashing without a key (no `channel` parameter, no token) falls back to power of two choices, so
/// keyless clients still spread evenly.
public struct NodePicker: Sendable {
    public let algorithm: BalancingAlgorithm
    /// Bounded-load factor of `hash` (1.25 = 125%).
    public let hashBalanceFactor: Double
    private var roundRobin = SmoothWeightedRoundRobin()
    private var leastConnections = LeastConnectionsPicker()
    private var leastTime = LeastTimePicker()
    private var hashing: BoundedLoadHashPicker
    private let twoChoices = PowerOfTwoChoicesPicker()

    /// The spread of `candidates` (the imbalance ratio in `/metrics`): (max + 1) ÷ (min + 1) of active
    /// connections per unit of weight, the +1 keeping a freshly added empty node finite (1 when fewer
    /// than two candidates).
    public static func spread(of candidates: [PickCandidate]) -> Double {
        guard candidates.count > 1 else { return 1 }
        let loads = candidates.map { Double($0.active) / Double($0.weight) }
        return ((loads.max() ?? 0) + 1) / ((loads.min() ?? 0) + 1)
    }

    public init(algorithm: BalancingAlgorithm, hashBalanceFactor: Double = 1.25) {
        self.algorithm = algorithm
        self.hashBalanceFactor = hashBalanceFactor
        self.hashing = BoundedLoadHashPicker(balanceFactor: hashBalanceFactor)
    }

    /// The index in `candidates` of the node to use, or nil when there is none.
    public mutating func pick(
        from candidates: [PickCandidate], key: String?, using generator: inout some RandomNumberGenerator
    ) -> Int? {
        switch self.algorithm {
        case .roundRobin: return self.roundRobin.pick(from: candidates)
        case .leastConnections: return self.leastConnections.pick(from: candidates)
        case .powerOfTwoChoices: return self.twoChoices.pick(from: candidates, using: &generator)
        case .leastTime: return self.leastTime.pick(from: candidates)
        case .hash:
            guard let key, !key.isEmpty else { return self.twoChoices.pick(from: candidates, using: &generator) }
            return self.hashing.pick(from: candidates, keyHash: HashRing.hash(key.utf8))
        }
    }
}
