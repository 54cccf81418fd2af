/// splitmix64: a deterministic generator, so a distribution test sees the same picks every run.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { self.state = seed }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Simulates connections against a picker: each step opens one connection on the picked node and, once
/// `open` connections exist, closes one chosen at random (exponential lifetimes), so least-loaded
/// pickers see realistic, changing counts. Returns how many picks each node got.
func simulatePicks(
    weights: [Int], picks: Int, open: Int, seed: UInt64,
    pick: (_ candidates: [PickCandidate], _ generator: inout SeededGenerator) -> Int?
) -> [Int] {
    var generator = SeededGenerator(seed: seed)
    var active = [Int](repeating: 0, count: weights.count)
    var counts = [Int](repeating: 0, count: weights.count)
    var pool: [Int] = []
    pool.reserveCapacity(open + 1)
    for _ in 0..<picks {
        let candidates = weights.indices.map { PickCandidate(id: "n\($0)", weight: weights[$0], active: active[$0]) }
        guard let chosen = pick(candidates, &generator) else { continue }
        counts[chosen] += 1
        active[chosen] += 1
        pool.append(chosen)
        if pool.count > open {
            let victim = Int.random(in: 0..<pool.count, using: &generator)
            active[pool[victim]] -= 1
            pool.swapAt(victim, pool.count - 1)
            pool.removeLast()
        }
    }
    return counts
}

/// The largest relative deviation of `counts` from shares proportional to `weights`.
func worstDeviation(_ counts: [Int], weights: [Int]) -> Double {
    let total = Double(counts.reduce(0, +))
    let weightSum = Double(weights.reduce(0, +))
    return zip(counts, weights).map { count, weight in
        let expected = total * Double(weight) / weightSum
        return abs(Double(count) - expected) / expected
    }.max() ?? 0
}

import SwitchboardBalancer
