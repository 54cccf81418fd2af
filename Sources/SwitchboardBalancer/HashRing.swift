/// A consistent-hash ring: every node owns `pointsPerWeight × weight` points on a 64-bit circle, and a
/// key belongs to the first point at or after its own hash.
///
/// Adding a node moves only the keys that land on its new points (about 1/N of them); removing one moves
/// only its own keys. The hash is FNV-1a followed by the splitmix64 finalizer, stable across processes
/// and runs (unlike Swift's seeded `Hasher`), so several balancers agree on where a key goes.
public struct HashRing: Sendable {
    /// Points per unit of weight when the ring is small; never fewer than `minimumPointsPerWeight`.
    public static let preferredPointsPerWeight = 1000
    /// At least 100 points per weight unit, while the total stays within `maximumPoints`.
    public static let minimumPointsPerWeight = 100
    /// Bound on the total number of points (memory and build time), which wins over the floor: a
    /// registry listing 1,000 nodes of weight 100 would otherwise make a ring of 10 million points
    /// (160 MB, seconds to sort) on every change of the candidate set.
    public static let maximumPoints = 400_000

    /// Node identities, indexed by the `node` of each point.
    public let nodes: [String]
    private let points: [(hash: UInt64, node: Int32)]

    /// Builds the ring for these nodes (identity, weight ≥ 1).
    public init(nodes: [(id: String, weight: Int)]) {
        self.nodes = nodes.map(\.id)
        let totalWeight = nodes.reduce(0) { $0 + max(1, $1.weight) }
        let affordable = Self.maximumPoints / max(1, totalWeight)
        let perWeight = max(1, min(Self.preferredPointsPerWeight, affordable))
        var points: [(hash: UInt64, node: Int32)] = []
        points.reserveCapacity(totalWeight * perWeight)
        for (index, node) in nodes.enumerated() {
            let base = Self.hash(Array(node.id.utf8))
            for replica in 0..<(max(1, node.weight) * perWeight) {
                points.append((Self.mix(base &+ UInt64(replica) &* 0x9E37_79B9_7F4A_7C15), Int32(index)))
            }
        }
        points.sort { $0.hash < $1.hash || ($0.hash == $1.hash && $0.node < $1.node) }
        self.points = points
    }

    /// Number of points on the ring.
    public var pointCount: Int { self.points.count }

    /// Indices into `nodes`, distinct, in ring order starting from the owner of `keyHash`.
    public func walk(from keyHash: UInt64) -> [Int] {
        guard !self.points.isEmpty else { return [] }
        var low = 0
        var high = self.points.count
        while low < high {
            let mid = (low + high) / 2
            if self.points[mid].hash < keyHash { low = mid + 1 } else { high = mid }
        }
        var seen = [Bool](repeating: false, count: self.nodes.count)
        var order: [Int] = []
        var index = low % self.points.count
        var steps = 0
        while order.count < self.nodes.count && steps < self.points.count {
            let node = Int(self.points[index].node)
            if !seen[node] {
                seen[node] = true
                order.append(node)
            }
            index = (index + 1) % self.points.count
            steps += 1
        }
        return order
    }

    /// The owner of `keyHash` (ignoring load), or nil on an empty ring.
    public func owner(of keyHash: UInt64) -> Int? { self.walk(from: keyHash).first }

    /// The stable 64-bit hash of a key's bytes.
    public static func hash(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            h ^= UInt64(byte)
            h = h &* 0x0000_0100_0000_01b3
        }
        return Self.mix(h)
    }

    /// splitmix64's finalizer: spreads FNV's weak low bits over the whole word.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
