import NIOCore
import Testing

@testable import SwitchboardBalancer

/// Balancer-side rebalancing: while the nodes' spread is over 1.25 (or `POST /admin/rebalance` asked
/// for it), non-hash algorithms pick by least connections.
@Suite struct RebalancePickTests {
    /// Two old nodes full, two new ones empty (after scale-out).
    static let scaledOut = [
        PickCandidate(id: "a", weight: 1, active: 300), PickCandidate(id: "b", weight: 1, active: 300),
        PickCandidate(id: "c", weight: 1, active: 0), PickCandidate(id: "d", weight: 1, active: 0),
    ]

    /// Picks `count` connections (each counted as opened on the node picked) and returns the final counts.
    static func fill(_ picker: inout NodePicker, _ start: [PickCandidate], count: Int, rebalancing: Bool = false) -> [Int] {
        var candidates = start
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<count {
            guard let index = picker.pick(from: candidates, key: nil, using: &generator, rebalancing: rebalancing) else { break }
            candidates[index].active += 1
        }
        return candidates.map(\.active)
    }

    @Test(arguments: [BalancingAlgorithm.powerOfTwoChoices, .roundRobin, .leastTime])
    func overTheSpreadNewConnectionsGoToTheEmptierNodes(algorithm: BalancingAlgorithm) {
        var picker = NodePicker(algorithm: algorithm)
        #expect(picker.picksLeastConnectionsToRebalance(Self.scaledOut))
        // The 300 clients the old nodes move come back: all land on the new nodes.
        let counts = Self.fill(&picker, Self.scaledOut, count: 300)
        #expect(counts == [300, 300, 150, 150])
    }

    @Test func theSpreadThresholdIsAnOption() throws {
        // 200 and 140 connections: spread 201/141 = 1.43.
        let uneven = [PickCandidate(id: "a", weight: 1, active: 200), PickCandidate(id: "b", weight: 1, active: 140)]
        #expect(NodePicker(algorithm: .powerOfTwoChoices).picksLeastConnectionsToRebalance(uneven))
        #expect(!NodePicker(algorithm: .powerOfTwoChoices, rebalanceSpread: 1.5).picksLeastConnectionsToRebalance(uneven))
        #expect(NodePicker(algorithm: .powerOfTwoChoices, rebalanceSpread: 1.05).rebalancedSpread == 1.05)
        #expect(NodePicker(algorithm: .powerOfTwoChoices).rebalancedSpread == 1.10)
        var configuration = BalancerConfiguration()
        try configuration.set("rebalanceSpread", text: "150")
        #expect(configuration.rebalanceSpread == 1.5)
        for bad in ["100", "1001", "abc", "nan", "-5"] {
            #expect(throws: BalancerConfigurationError.self) { try configuration.set("rebalanceSpread", text: bad) }
        }
        // The router follows a reload's threshold.
        configuration.nodes = [BackendNode(host: "127.0.0.1", port: 1)]
        let router = NodeRouter(configuration: configuration)
        router.reconfigure(algorithm: .roundRobin, hashBalanceFactor: 1.25, maxConnections: 10, rebalanceSpread: 2)
        #expect(router.rebalanceSpread == 2)
    }

    @Test func underTheSpreadTheAlgorithmPicks() {
        let even = (0..<4).map { PickCandidate(id: "n\($0)", weight: 1, active: 100 + $0 * 5) }
        #expect(NodePicker.spread(of: even) <= NodePicker.defaultRebalanceSpread)
        var roundRobin = NodePicker(algorithm: .roundRobin)
        #expect(!roundRobin.picksLeastConnectionsToRebalance(even))
        // Round robin keeps its order (least connections would pick n0 four times).
        var generator = SeededGenerator(seed: 1)
        let picked = (0..<4).compactMap { _ in roundRobin.pick(from: even, key: nil, using: &generator) }
        #expect(Set(picked) == [0, 1, 2, 3])
        // Asked for (POST /admin/rebalance): least connections even under the spread.
        #expect(roundRobin.picksLeastConnectionsToRebalance(even, rebalancing: true))
        #expect(roundRobin.pick(from: even, key: nil, using: &generator, rebalancing: true) == 0)
    }

    @Test func hashingKeepsItsKeys() {
        var picker = NodePicker(algorithm: .hash)
        #expect(!picker.picksLeastConnectionsToRebalance(Self.scaledOut, rebalancing: true))
        var generator = SeededGenerator(seed: 3)
        let first = picker.pick(from: Self.scaledOut, key: "chat:lobby", using: &generator)
        for _ in 0..<20 {
            #expect(picker.pick(from: Self.scaledOut, key: "chat:lobby", using: &generator, rebalancing: true) == first)
        }
    }

    @Test func adminRebalanceForcesLeastConnectionsForAWhileAndCounts() throws {
        var configuration = BalancerConfiguration()
        configuration.algorithm = .roundRobin
        configuration.nodes = [BackendNode(host: "127.0.0.1", port: 1), BackendNode(host: "127.0.0.1", port: 2)]
        let router = NodeRouter(configuration: configuration)
        router.setMembers(configuration.nodes)
        let now = NIODeadline.now()
        // 20 each (at 1 and 0 the spread, (1 + 1) / (0 + 1), is over 1.25: some of these count).
        for _ in 0..<40 { _ = try #require(router.pick(key: nil, excluding: [], now: now)) }
        let base = router.snapshot().counters.rebalancePicks
        // Even: round robin alternates, nothing counted as a rebalancing pick.
        var picked: [String] = []
        for _ in 0..<2 { picked.append(try #require(router.pick(key: nil, excluding: [], now: now)).node.id) }
        #expect(Set(picked).count == 2)
        #expect(router.snapshot().counters.rebalancePicks == base)
        let spread = router.startRebalance(for: .seconds(60), now: now)
        #expect(spread == 1)
        #expect(router.snapshot().counters.rebalanceRequests == 1)
        _ = router.pick(key: nil, excluding: [], now: now + .seconds(1))
        #expect(router.snapshot().counters.rebalancePicks == base + 1)
        // After the duration, even nodes go back to round robin.
        _ = router.pick(key: nil, excluding: [], now: now + .seconds(61))
        #expect(router.snapshot().counters.rebalancePicks == base + 1)
    }

    @Test func onceOverTheSpreadLeastConnectionsUntilDownTo110() throws {
        var configuration = BalancerConfiguration()
        configuration.algorithm = .roundRobin
        let a = BackendNode(host: "127.0.0.1", port: 1), b = BackendNode(host: "127.0.0.1", port: 2)
        configuration.nodes = [a, b]
        let router = NodeRouter(configuration: configuration)
        router.setMembers(configuration.nodes)
        let now = NIODeadline.now()
        // 100 on a while b is drained (as if b had just been added), then b comes in.
        #expect(router.setDrained(b.id, true))
        for _ in 0..<100 { #expect(try #require(router.pick(key: nil, excluding: [], now: now)).node.id == a.id) }
        #expect(router.setDrained(b.id, false))
        // Round robin would alternate once the spread is under 1.25 (b at 80); it stays least
        // connections until (100 + 1) / (b + 1) <= 1.10, b = 91.
        for i in 0..<91 { #expect(try #require(router.pick(key: nil, excluding: [], now: now)).node.id == b.id, "pick \(i)") }
        // Then round robin again: both nodes get picks.
        let next = try (0..<4).map { _ in try #require(router.pick(key: nil, excluding: [], now: now)).node.id }
        #expect(Set(next) == [a.id, b.id])
    }
}
