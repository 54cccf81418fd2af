import Testing

@testable import SwitchboardBalancer

/// The distribution targets over 100,000 simulated picks.
@Suite struct PickerDistributionTests {
    static let picks = 100_000
    static let weightSets: [[Int]] = [[1, 1, 1, 1], [1, 2, 3, 4], [5, 1, 1]]

    @Test(arguments: weightSets)
    func roundRobinFollowsWeights(weights: [Int]) {
        var picker = SmoothWeightedRoundRobin()
        let counts = simulatePicks(weights: weights, picks: Self.picks, open: 1000, seed: 1) { c, _ in picker.pick(from: c) }
        #expect(worstDeviation(counts, weights: weights) <= 0.03, "counts \(counts)")
    }

    @Test func roundRobinIsSmooth() {
        // Weights 5,1,1: the heavy node never takes more than 3 picks in a row (nginx's example sequence
        // is a a b a c a a).
        var picker = SmoothWeightedRoundRobin()
        let candidates = [5, 1, 1].enumerated().map { PickCandidate(id: "n\($0.offset)", weight: $0.element, active: 0) }
        let sequence = (0..<7).compactMap { _ in picker.pick(from: candidates) }
        #expect(sequence == [0, 0, 1, 0, 2, 0, 0])
    }

    @Test(arguments: weightSets)
    func leastConnectionsFollowsWeights(weights: [Int]) {
        var picker = LeastConnectionsPicker()
        let counts = simulatePicks(weights: weights, picks: Self.picks, open: 1000, seed: 2) { c, _ in picker.pick(from: c) }
        #expect(worstDeviation(counts, weights: weights) <= 0.03, "counts \(counts)")
    }

    @Test(arguments: weightSets)
    func powerOfTwoChoicesFollowsWeights(weights: [Int]) {
        let picker = PowerOfTwoChoicesPicker()
        let counts = simulatePicks(weights: weights, picks: Self.picks, open: 1000, seed: 3) { c, g in
            picker.pick(from: c, using: &g)
        }
        #expect(worstDeviation(counts, weights: weights) <= 0.03, "counts \(counts)")
    }

    @Test func powerOfTwoChoicesDoesNotFloodAFreshNode() {
        // Three nodes with 1,000 connections each and a fresh empty one: over the next 100 picks least
        // connections gives all 100 to the fresh node; two random choices only those draws that include it.
        let picker = PowerOfTwoChoicesPicker()
        var generator = SeededGenerator(seed: 4)
        var active = [1000, 1000, 1000, 0]
        var toFresh = 0
        for _ in 0..<100 {
            let c = active.indices.map { PickCandidate(id: "n\($0)", weight: 1, active: active[$0]) }
            let chosen = picker.pick(from: c, using: &generator)!
            active[chosen] += 1
            if chosen == 3 { toFresh += 1 }
        }
        #expect(toFresh > 30 && toFresh < 70, "fresh node got \(toFresh) of 100")
    }

    @Test func leastTimePrefersTheFasterNode() {
        var picker = LeastTimePicker()
        var active = [0, 0]
        let times = [0.001, 0.004]
        for _ in 0..<1000 {
            let c = active.indices.map { PickCandidate(id: "n\($0)", weight: 1, active: active[$0], responseTime: times[$0]) }
            active[picker.pick(from: c)!] += 1
        }
        // Score (active + 1) × time balances at active ratio 4:1.
        let ratio = Double(active[0]) / Double(active[1])
        #expect(ratio > 3.8 && ratio < 4.2, "active \(active)")
    }

    @Test(arguments: [[1, 1, 1, 1], [1, 2, 1]])
    func hashingSpreadsKeysWithinTenPercent(weights: [Int]) {
        var picker = BoundedLoadHashPicker(balanceFactor: 1.25)
        let candidates = weights.indices.map { PickCandidate(id: "127.0.0.1:\(8001 + $0)", weight: weights[$0], active: 0) }
        var counts = [Int](repeating: 0, count: weights.count)
        for key in 0..<Self.picks {
            // Idle nodes: the bound never applies, this is the ring's own spread.
            counts[picker.pick(from: candidates, keyHash: HashRing.hash("chat:\(key)".utf8))!] += 1
        }
        #expect(worstDeviation(counts, weights: weights) <= 0.10, "counts \(counts)")
    }

    /// A registry may list up to 1,000 nodes of weight 100: the ring stays within its point budget
    /// (it was 10 million points, rebuilt on every change of the candidate set), with every node on it.
    @Test func aHugeRegistryKeepsTheRingWithinItsBudget() {
        let nodes = (0..<1000).map { (id: "10.0.\($0 / 250).\($0 % 250):8001", weight: 100) }
        let ring = HashRing(nodes: nodes)
        #expect(ring.pointCount <= HashRing.maximumPoints)
        #expect(ring.pointCount >= nodes.count * 100)
        let owners = Set((0..<20_000).compactMap { ring.owner(of: HashRing.hash("k\($0)".utf8)) })
        #expect(owners.count > 900, "\(owners.count) nodes own keys")
    }

    @Test func addingAFifthNodeMovesAtMostAFifthPlusFivePercent() {
        let four = (0..<4).map { (id: "127.0.0.1:\(8001 + $0)", weight: 1) }
        let five = four + [(id: "127.0.0.1:8005", weight: 1)]
        let before = HashRing(nodes: four)
        let after = HashRing(nodes: five)
        var moved = 0
        var movedElsewhere = 0
        for key in 0..<Self.picks {
            let hash = HashRing.hash("chat:\(key)".utf8)
            let old = before.nodes[before.owner(of: hash)!]
            let new = after.nodes[after.owner(of: hash)!]
            if old != new {
                moved += 1
                if new != "127.0.0.1:8005" { movedElsewhere += 1 }
            }
        }
        let fraction = Double(moved) / Double(Self.picks)
        #expect(fraction <= 0.20 + 0.05, "moved \(fraction)")
        #expect(fraction >= 0.10, "the new node took almost nothing: \(fraction)")
        #expect(movedElsewhere == 0, "keys moved between old nodes: \(movedElsewhere)")
    }

    @Test(arguments: [1.25, 1.5])
    func hotKeyLeavesNoNodeAboveTheBound(factor: Double) {
        // Half of all connections carry one key; the rest are spread over many keys. Connections stay open
        // (the worst case for the bound): after every pick no node may exceed factor × mean + 1.
        var picker = BoundedLoadHashPicker(balanceFactor: factor)
        var generator = SeededGenerator(seed: 5)
        var active = [0, 0, 0, 0]
        var worst = 0.0
        for step in 0..<Self.picks {
            let key = Bool.random(using: &generator) ? "hot" : "key\(Int.random(in: 0..<50_000, using: &generator))"
            let c = active.indices.map { PickCandidate(id: "127.0.0.1:\(8001 + $0)", weight: 1, active: active[$0]) }
            active[picker.pick(from: c, keyHash: HashRing.hash(key.utf8))!] += 1
            let mean = Double(step + 1) / 4
            worst = max(worst, Double(active.max()!) - factor * mean)
        }
        #expect(worst <= 1.0, "a node exceeded \(factor) × mean by \(worst); final \(active)")
    }

    @Test func hotKeyStaysOnItsNodeWhileUnderTheBound() {
        var picker = BoundedLoadHashPicker(balanceFactor: 1.25)
        let c = (0..<4).map { PickCandidate(id: "127.0.0.1:\(8001 + $0)", weight: 1, active: 10) }
        let hash = HashRing.hash("chat:lobby".utf8)
        let first = picker.pick(from: c, keyHash: hash)!
        for _ in 0..<10 { #expect(picker.pick(from: c, keyHash: hash) == first) }
        var loaded = c
        loaded[first].active = 100
        let second = picker.pick(from: loaded, keyHash: hash)!
        #expect(second != first)
    }

    @Test func emptyCandidatesPickNothing() {
        var rr = SmoothWeightedRoundRobin()
        var lc = LeastConnectionsPicker()
        var lt = LeastTimePicker()
        var hash = BoundedLoadHashPicker()
        var g = SeededGenerator(seed: 6)
        #expect(rr.pick(from: []) == nil)
        #expect(lc.pick(from: []) == nil)
        #expect(lt.pick(from: []) == nil)
        #expect(PowerOfTwoChoicesPicker().pick(from: [], using: &g) == nil)
        #expect(hash.pick(from: [], keyHash: 1) == nil)
    }

    @Test func hashWithoutKeyFallsBackToTwoChoices() {
        var picker = NodePicker(algorithm: .hash)
        var g = SeededGenerator(seed: 7)
        let counts = simulatePicks(weights: [1, 1, 1, 1], picks: 20_000, open: 400, seed: 8) { c, gen in
            picker.pick(from: c, key: nil, using: &gen)
        }
        _ = g.next()
        #expect(worstDeviation(counts, weights: [1, 1, 1, 1]) <= 0.05, "counts \(counts)")
    }
}
