/// The configured algorithm with its state: one value answers "which node?" for every new connection.
///
/// Hashing without a key (no `channel` parameter, no token) falls back to power of two choices, so
/// keyless clients still spread evenly.
public struct NodePicker: Sendable {
    public let algorithm: BalancingAlgorithm
    /// Bounded-load factor of `hash` (1.25 = 125%).
    public let hashBalanceFactor: Double
    /// Above this spread (``spread(of:)``) round robin, power of two choices and least response time
    /// pick by least connections, so that clients moved by node-side rebalancing (close 3002) after
    /// scale-out land on the emptier nodes; hashing keeps its keys (its bounded load evens it out).
    /// `--rebalance-spread`, default ``defaultRebalanceSpread``.
    public let rebalanceSpread: Double
    /// Once picking by least connections for the spread, the router keeps at it until the spread is
    /// down to this (the nodes' own target, 1.10, or the threshold itself when that is lower), so it
    /// does not flip back at the threshold and undo the last moves.
    public var rebalancedSpread: Double { min(Self.nodesTargetSpread, self.rebalanceSpread) }
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

    /// The default of ``rebalanceSpread``.
    public static let defaultRebalanceSpread = 1.25
    /// The spread nodes rebalance to by themselves (their `rebalanceTolerance` of 0.10).
    public static let nodesTargetSpread = 1.10

    public init(algorithm: BalancingAlgorithm, hashBalanceFactor: Double = 1.25, rebalanceSpread: Double = Self.defaultRebalanceSpread) {
        self.algorithm = algorithm
        self.hashBalanceFactor = hashBalanceFactor
        self.rebalanceSpread = rebalanceSpread
        self.hashing = BoundedLoadHashPicker(balanceFactor: hashBalanceFactor)
    }

    /// Whether a pick among `candidates` goes by least connections to even out the nodes: the spread
    /// is over ``rebalanceSpread`` (or `rebalancing` was asked for, `POST /admin/rebalance`), and the
    /// algorithm is one that does not keep keys on nodes.
    public func picksLeastConnectionsToRebalance(_ candidates: [PickCandidate], rebalancing: Bool = false) -> Bool {
        switch self.algorithm {
        case .hash, .leastConnections: false
        case .roundRobin, .powerOfTwoChoices, .leastTime: rebalancing || Self.spread(of: candidates) > self.rebalanceSpread
        }
    }

    /// The index in `candidates` of the node to use, or nil when there is none. While
    /// ``picksLeastConnectionsToRebalance(_:rebalancing:)``, by least connections.
    public mutating func pick(
        from candidates: [PickCandidate], key: String?, using generator: inout some RandomNumberGenerator,
        rebalancing: Bool = false
    ) -> Int? {
        if self.picksLeastConnectionsToRebalance(candidates, rebalancing: rebalancing) {
            return self.leastConnections.pick(from: candidates)
        }
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
