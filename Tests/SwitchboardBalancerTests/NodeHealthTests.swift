import NIOCore
import Testing

@testable import SwitchboardBalancer

@Suite struct NodeHealthTests {
    @Test func fallTakesTheNodeDownAndRiseBringsItBack() {
        var health = NodeHealth(policy: .init(rise: 2, fall: 2))
        #expect(health.isUp)
        #expect(health.checkFailed() == nil)
        #expect(health.checkSucceeded() == nil)  // resets the failure run
        #expect(health.checkFailed() == nil)
        #expect(health.checkFailed() == .wentDown)
        #expect(!health.isUp)
        #expect(health.checkFailed() == nil)
        #expect(health.checkSucceeded() == nil)
        #expect(health.checkFailed() == nil)  // resets the success run
        #expect(health.checkSucceeded() == nil)
        #expect(health.checkSucceeded() == .cameUp)
        #expect(health.isUp)
    }

    @Test func ejectionDoublesFromFiveToSixtySeconds() {
        var health = NodeHealth()
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var lengths: [Int64] = []
        for _ in 0..<6 { lengths.append(health.eject(at: start).nanoseconds / 1_000_000_000) }
        #expect(lengths == [5, 10, 20, 40, 60, 60])
        health.connectSucceeded()
        #expect(health.eject(at: start).nanoseconds == TimeAmount.seconds(5).nanoseconds)
        #expect(health.isEjected(at: start + .seconds(4)))
        #expect(!health.isEjected(at: start + .seconds(5)))
        #expect(!health.isAvailable(at: start + .seconds(1)))
        #expect(health.isAvailable(at: start + .seconds(6)))
    }
}

@Suite struct NodeHealthAnswerTests {
    @Test func fiveServerErrorsInARowEject() {
        var health = NodeHealth()
        for _ in 0..<4 { #expect(!(health.answered(status: 500) as Bool)) }
        #expect(!(health.answered(status: 101) as Bool))  // a good answer resets the run
        for _ in 0..<4 { #expect(!(health.answered(status: 502) as Bool)) }
        #expect((health.answered(status: 504) as Bool))
        // The run starts over after the verdict.
        for _ in 0..<4 { #expect(!(health.answered(status: 500) as Bool)) }
        #expect((health.answered(status: 500) as Bool))
    }

    @Test func answersAboutTheRequestOrItsCapsDoNotCount() {
        var health = NodeHealth(policy: .init(serverErrorLimit: 2))
        for status in [503, 501, 505, 503, 404, 400, 429, 200, 101, 503] {
            #expect(!(health.answered(status: status) as Bool), "status \(status)")
        }
        #expect(!(health.answered(status: 500) as Bool))
        #expect(!(health.answered(status: 503) as Bool))  // not a fault, but it breaks the run
        #expect(!(health.answered(status: 500) as Bool))
        #expect((health.answered(status: 500) as Bool))
    }

    @Test func aStatusIsReadFromTheFirstBytesOnly() {
        func status(_ text: String) -> Int? { TunnelLink.status(ofFirstBytes: ByteBuffer(string: text)) }
        #expect(status("HTTP/1.1 502 Bad Gateway\r\n") == 502)
        #expect(status("HTTP/1.0 500\r\n") == 500)
        #expect(status("HTTP/1.1 500") == 500)
        #expect(status("HTTP/1.1 101 Switching Protocols\r\n") == 101)
        #expect(status("HTTP/1.1 50") == nil)  // not whole yet
        #expect(status("HTTP/1.1 5000 x") == nil)
        #expect(status("HTTP/1.1 5x0 x") == nil)
        #expect(status("HTTP/2.0 500 x") == nil)
        #expect(status("\u{81}\u{05}hello") == nil)  // not HTTP at all
    }

    @Test func aJoiningNodeWaitsForOneGoodCheck() {
        var health = NodeHealth(policy: .init(rise: 3), awaitingFirstCheck: true)
        #expect(!health.isUp)
        #expect(health.checkSucceeded() == .cameUp)
        #expect(health.isUp)
        // One that fails its first check is down like any other: `rise` good checks bring it up.
        var failing = NodeHealth(policy: .init(rise: 3), awaitingFirstCheck: true)
        #expect(failing.checkFailed() == nil)
        #expect(failing.checkSucceeded() == nil)
        #expect(failing.checkSucceeded() == nil)
        #expect(failing.checkSucceeded() == .cameUp)
    }
}

@Suite struct NodeTableTests {
    static let nodes = (1...4).map { BackendNode(host: "127.0.0.1", port: 8000 + $0) }
    static let now = NIODeadline.uptimeNanoseconds(10_000_000_000)

    @Test func countersSurviveMembershipChanges() {
        var table = NodeTable(nodes: Self.nodes)
        table.connectionOpened("127.0.0.1:8001")
        table.connectionOpened("127.0.0.1:8001")
        table.connectionOpened("127.0.0.1:8002")
        // Scale out: the old nodes keep their counts.
        table.setMembers(Self.nodes + [BackendNode(host: "127.0.0.1", port: 8005)])
        #expect(table.entries["127.0.0.1:8001"]?.active == 2)
        #expect(table.entries["127.0.0.1:8005"]?.active == 0)
        // It joined a running balancer: it takes connections after its first good check.
        #expect(!table.candidates(at: Self.now).contains { $0.id == "127.0.0.1:8005" })
        table.recordCheck("127.0.0.1:8005", succeeded: true)
        #expect(table.candidates(at: Self.now).contains { $0.id == "127.0.0.1:8005" })
        // 8001 leaves with tunnels open: not pickable, still counted, back with its count.
        table.setMembers(Array(Self.nodes.dropFirst()))
        #expect(!table.candidates(at: Self.now).contains { $0.id == "127.0.0.1:8001" })
        #expect(table.entries["127.0.0.1:8001"]?.active == 2)
        #expect(table.entries["127.0.0.1:8005"] == nil)  // left with no tunnels: gone
        table.setMembers(Self.nodes)
        #expect(table.candidates(at: Self.now).first { $0.id == "127.0.0.1:8001" }?.active == 2)
        // Removed again, its last tunnels close: the row goes.
        table.setMembers(Array(Self.nodes.dropFirst()))
        table.connectionClosed("127.0.0.1:8001", bytesToNode: 10, bytesFromNode: 20)
        #expect(table.entries["127.0.0.1:8001"]?.bytesToNode == 10)
        table.connectionClosed("127.0.0.1:8001")
        #expect(table.entries["127.0.0.1:8001"] == nil)
    }

    @Test func neverMoreThanHalfThePassivelyEjected() {
        var table = NodeTable(nodes: Self.nodes)
        #expect(table.connectFailed("127.0.0.1:8001", at: Self.now) != nil)
        #expect(table.connectFailed("127.0.0.1:8002", at: Self.now) != nil)
        #expect(table.connectFailed("127.0.0.1:8003", at: Self.now) == nil)  // would be 3 of 4
        #expect(table.candidates(at: Self.now).map(\.id) == ["127.0.0.1:8003", "127.0.0.1:8004"])
        #expect(table.entries["127.0.0.1:8003"]?.connectFailures == 1)
        // After the ejection ends the nodes are back.
        #expect(table.candidates(at: Self.now + .seconds(5)).count == 4)

        var single = NodeTable(nodes: [Self.nodes[0]])
        #expect(single.connectFailed("127.0.0.1:8001", at: Self.now) == nil)  // a lone node is never ejected
        #expect(single.candidates(at: Self.now).count == 1)
    }

    @Test func aRunOfServerErrorsEjectsWithinThePanicThreshold() {
        var table = NodeTable(nodes: Self.nodes)
        for _ in 0..<4 { #expect(table.recordAnswer("127.0.0.1:8001", status: 502, at: Self.now) == nil) }
        #expect(table.recordAnswer("127.0.0.1:8001", status: 502, at: Self.now) == .seconds(5))
        #expect(table.entries["127.0.0.1:8001"]?.serverErrors == 5)
        #expect(!table.candidates(at: Self.now).contains { $0.id == "127.0.0.1:8001" })
        #expect(table.connectFailed("127.0.0.1:8002", at: Self.now) != nil)
        // A third ejected node of four would pass the panic threshold.
        for _ in 0..<5 { #expect(table.recordAnswer("127.0.0.1:8003", status: 500, at: Self.now) == nil) }
        #expect(table.candidates(at: Self.now).contains { $0.id == "127.0.0.1:8003" })
        // 503 (draining, full, a client over its limits) never ejects.
        for _ in 0..<20 { #expect(table.recordAnswer("127.0.0.1:8004", status: 503, at: Self.now + .seconds(60)) == nil) }
    }

    @Test func serverErrorEjectionsDoubleThoughConnectsSucceed() {
        var table = NodeTable(nodes: Self.nodes)
        var lengths: [Int64] = []
        var now = Self.now
        for _ in 0..<4 {
            for _ in 0..<5 {
                table.connectSucceeded("127.0.0.1:8001")  // a node answering 500 accepts every connect
                if let ejection = table.recordAnswer("127.0.0.1:8001", status: 500, at: now) {
                    lengths.append(ejection.nanoseconds / 1_000_000_000)
                    now = now + ejection
                }
            }
        }
        #expect(lengths == [5, 10, 20, 40])
        // A 503 is not a good answer, and a connect failure's ejection in between does not clear the
        // run of server errors either: the backoff keeps doubling.
        table.recordAnswer("127.0.0.1:8001", status: 503, at: now)
        #expect(table.connectFailed("127.0.0.1:8001", at: now) == .seconds(60))
        now = now + .seconds(60)
        table.connectSucceeded("127.0.0.1:8001")
        for _ in 0..<4 { table.recordAnswer("127.0.0.1:8001", status: 500, at: now) }
        #expect(table.recordAnswer("127.0.0.1:8001", status: 500, at: now) == .seconds(60))
        now = now + .seconds(60)
        // A good answer: the backoff starts over.
        table.recordAnswer("127.0.0.1:8001", status: 101, at: now)
        for _ in 0..<4 { table.recordAnswer("127.0.0.1:8001", status: 502, at: now) }
        #expect(table.recordAnswer("127.0.0.1:8001", status: 502, at: now) == .seconds(5))
    }

    @Test func anEjectionOutlastsLeavingAndRejoining() {
        var table = NodeTable(nodes: Self.nodes)
        #expect(table.connectFailed("127.0.0.1:8001", at: Self.now) == .seconds(5))
        table.setMembers(Array(Self.nodes.dropFirst()), at: Self.now + .seconds(1))
        #expect(table.entries["127.0.0.1:8001"]?.isMember == false)  // remembered while ejected
        table.setMembers(Self.nodes, at: Self.now + .seconds(2))
        #expect(!table.candidates(at: Self.now + .seconds(2)).contains { $0.id == "127.0.0.1:8001" })
        // Once the ejection is over it still needs a good check, since nobody checked it while it was gone.
        #expect(!table.candidates(at: Self.now + .seconds(6)).contains { $0.id == "127.0.0.1:8001" })
        table.recordCheck("127.0.0.1:8001", succeeded: true)
        #expect(table.candidates(at: Self.now + .seconds(6)).contains { $0.id == "127.0.0.1:8001" })
        // The next ejection is twice as long: the backoff was kept too.
        #expect(table.connectFailed("127.0.0.1:8001", at: Self.now + .seconds(7)) == .seconds(10))
        // A node that left after its ejection ended is forgotten.
        table.setMembers(Array(Self.nodes.dropFirst()), at: Self.now + .seconds(30))
        #expect(table.entries["127.0.0.1:8001"] == nil)
    }

    @Test func newNodesStartUpWhenNoneOfTheOthersCouldTakeClients() {
        var table = NodeTable(nodes: Array(Self.nodes.prefix(2)))
        #expect(table.candidates(at: Self.now).count == 2)  // starting: up at once
        // A reload that replaces every node: the new ones take clients at once.
        table.setMembers(Array(Self.nodes.suffix(2)), at: Self.now)
        #expect(table.candidates(at: Self.now).map(\.id) == ["127.0.0.1:8003", "127.0.0.1:8004"])
        // Both down: a node joining then is up at once too (it is all there is).
        table.recordCheck("127.0.0.1:8003", succeeded: false)
        table.recordCheck("127.0.0.1:8003", succeeded: false)
        table.recordCheck("127.0.0.1:8004", succeeded: false)
        table.recordCheck("127.0.0.1:8004", succeeded: false)
        table.setMembers(Array(Self.nodes.suffix(3)), at: Self.now)
        #expect(table.candidates(at: Self.now).map(\.id) == ["127.0.0.1:8002"])
    }

    @Test func departedNodesRememberedForTheirEjectionAreBounded() {
        let many = (0..<2_400).map { BackendNode(host: "127.0.0.1", port: 10_000 + $0) }
        var table = NodeTable(nodes: many)
        for node in many.prefix(1_100) { #expect(table.connectFailed(node.id, at: Self.now) != nil) }
        table.setMembers(Array(many.dropFirst(1_100)), at: Self.now)
        #expect(table.entries.count == 1_300 + NodeTable.maximumDepartedKept)
    }

    @Test func downNodesAreNotCandidatesButKeepTheirTunnels() {
        var table = NodeTable(nodes: Self.nodes, healthPolicy: .init(rise: 1, fall: 1))
        table.connectionOpened("127.0.0.1:8002")
        #expect(table.recordCheck("127.0.0.1:8002", succeeded: false) == .wentDown)
        #expect(!table.candidates(at: Self.now).contains { $0.id == "127.0.0.1:8002" })
        #expect(table.entries["127.0.0.1:8002"]?.active == 1)
        #expect(table.recordCheck("127.0.0.1:8002", succeeded: true) == .cameUp)
        #expect(table.candidates(at: Self.now).contains { $0.id == "127.0.0.1:8002" })
    }

    @Test func responseTimeIsAMovingAverage() {
        var table = NodeTable(nodes: Self.nodes)
        table.recordResponseTime("127.0.0.1:8001", seconds: 0.010)
        table.recordResponseTime("127.0.0.1:8001", seconds: 0.020)
        let value = table.entries["127.0.0.1:8001"]?.responseTime ?? 0
        #expect(abs(value - 0.012) < 1e-9)
        table.recordResponseTime("127.0.0.1:8001", seconds: .nan)
        #expect(table.entries["127.0.0.1:8001"]?.responseTime == value)
    }

    @Test func backendNodeParsing() throws {
        #expect(try BackendNode.parse("127.0.0.1:8001") == BackendNode(host: "127.0.0.1", port: 8001))
        #expect(try BackendNode.parse("[::1]:8001,weight=3") == BackendNode(host: "::1", port: 8001, weight: 3))
        #expect(try BackendNode.parse("[::1]:8001").id == "[::1]:8001")
        for bad in ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":80", "h:80,weight=0", "h:80,weight=101", "h:80,w=2"] {
            #expect(throws: BalancerConfigurationError.self, "\(bad)") { try BackendNode.parse(bad) }
        }
    }
}

@Suite struct RegistryMembershipTests {
    @Test func parsesRegistryEntries() {
        let entry = RegistryNode.parse(
            Array(#"{"id":"n1","name":"a","address":"127.0.0.1:8001","connections":3,"draining":false}"#.utf8))
        #expect(entry == RegistryNode(id: "n1", node: BackendNode(host: "127.0.0.1", port: 8001), draining: false, connections: 3))
        #expect(RegistryNode.parse(Array(#"{"id":"n1","address":"0.0.0.0:8001"}"#.utf8)) == nil)
        #expect(RegistryNode.parse(Array(#"{"id":"n1","address":"nowhere"}"#.utf8)) == nil)
        #expect(RegistryNode.parse(Array(#"{"id":"n1"}"#.utf8)) == nil)
        #expect(RegistryNode.parse(Array("not json".utf8)) == nil)
    }

    @Test func parsesAnnouncedWeightAndLoad() {
        let entry = RegistryNode.parse(
            Array(#"{"id":"n1","address":"127.0.0.1:8001","connections":30,"maxConnections":100,"weight":10,"at":1000.5}"#.utf8))
        #expect(
            entry
                == RegistryNode(
                    id: "n1", node: BackendNode(host: "127.0.0.1", port: 8001, weight: 10), draining: false, connections: 30,
                    maxConnections: 100, announcedAt: 1000.5))
        // Out-of-range weights are clamped, nonsense counts read as 0, a non-finite time as none.
        let odd = RegistryNode.parse(
            Array(#"{"id":"n1","address":"127.0.0.1:8001","connections":-5,"maxConnections":-1,"weight":0,"at":1e999}"#.utf8))
        #expect(odd?.node.weight == 1 && odd?.connections == 0 && odd?.maxConnections == 0 && odd?.announcedAt == nil)
        #expect(RegistryNode.parse(Array(#"{"id":"n1","address":"127.0.0.1:8001","weight":5000}"#.utf8))?.node.weight == 100)
        #expect(RegistryNode.parse(Array(#"{"id":"n1","address":"127.0.0.1:8001","weight":99999999999999999999999}"#.utf8))?.node.weight == 1)
    }

    @Test(arguments: [
        // (connections, maxConnections, seconds since the report, uses load) -> weight, for an announced weight of 10
        (0, 100, 1.0, true, 10), (50, 100, 1.0, true, 5), (90, 100, 1.0, true, 1), (95, 100, 1.0, true, 1),
        (100, 100, 1.0, true, 1), (500, 100, 1.0, true, 1), (24, 100, 0.0, true, 8),
        (50, 100, 5.1, true, 10),  // stale: missed two announces
        (50, 100, -5.1, true, 10),  // from the future: clocks disagree
        (50, 0, 1.0, true, 10),  // no capacity said
        (50, 100, 1.0, false, 10),  // hashing: announced weight only
    ])
    func effectiveWeightFollowsFreeShare(connections: Int, maximum: Int, age: Double, usesLoad: Bool, expected: Int) {
        let entry = RegistryNode(
            id: "n", node: BackendNode(host: "127.0.0.1", port: 1, weight: 10), draining: false, connections: connections,
            maxConnections: maximum, announcedAt: 1000)
        #expect(entry.effectiveWeight(now: 1000 + age, usesLoad: usesLoad) == expected)
    }

    @Test func parsesCPUAndLoopLagWithinRange() {
        let entry = RegistryNode.parse(Array(#"{"id":"n1","address":"127.0.0.1:8001","cpu":0.42,"lag":0.013}"#.utf8))
        #expect(entry?.cpu == 0.42 && entry?.loopLag == 0.013)
        let odd = RegistryNode.parse(Array(#"{"id":"n1","address":"127.0.0.1:8001","cpu":7,"lag":1e300}"#.utf8))
        #expect(odd?.cpu == 1 && odd?.loopLag == 3600)
        let negative = RegistryNode.parse(Array(#"{"id":"n1","address":"127.0.0.1:8001","cpu":-3,"lag":-1}"#.utf8))
        #expect(negative?.cpu == 0 && negative?.loopLag == 0)
        let junk = RegistryNode.parse(Array(#"{"id":"n1","address":"127.0.0.1:8001","cpu":"high","lag":1e999}"#.utf8))
        #expect(junk != nil && junk?.cpu == nil && junk?.loopLag == nil)
    }

    @Test(arguments: [
        // (connections of 100, cpu, lag s, seconds since the report) -> weight, for an announced weight of 10
        (0, 0.5, nil, 1.0, 10),  // up to half the cores busy: CPU does not count
        (0, 0.75, nil, 1.0, 5),  // three quarters: half the weight
        (0, 0.95, nil, 1.0, 1), (0, 1.0, nil, 1.0, 1),
        (50, 0.6, nil, 1.0, 5),  // the busier figure counts: connections
        (20, 0.85, nil, 1.0, 3),  // ... or CPU
        (0, 0.0, 0.1375, 1.0, 5),  // loops half way between 25 ms and 250 ms late
        (0, 0.1, 0.25, 1.0, 1), (0, 0.1, 30.0, 1.0, 1),
        (0, 0.0, 0.02, 1.0, 10),  // 20 ms is a burst, not a node falling behind
        (0, 0.99, 0.25, 6.0, 10),  // stale: none of it counts
    ] as [(Int, Double, Double?, Double, Int)])
    func effectiveWeightCountsCPUAndLoopLag(connections: Int, cpu: Double, lag: Double?, age: Double, expected: Int) {
        let entry = RegistryNode(
            id: "n", node: BackendNode(host: "127.0.0.1", port: 1, weight: 10), draining: false, connections: connections,
            maxConnections: 100, announcedAt: 1000, cpu: cpu, loopLag: lag)
        #expect(entry.effectiveWeight(now: 1000 + age, usesLoad: true) == expected)
        #expect(entry.effectiveWeight(now: 1000 + age, usesLoad: false) == 10, "hashing ignores load")
    }

    @Test func cpuCountsWithoutAConnectionLimit() {
        let entry = RegistryNode(
            id: "n", node: BackendNode(host: "127.0.0.1", port: 1, weight: 10), draining: false, connections: 5,
            maxConnections: 0, announcedAt: 1000, cpu: 0.8)
        #expect(entry.effectiveWeight(now: 1001, usesLoad: true) == 4)
    }

    @Test func membersCarryEffectiveWeightsAndStaticWeightsStand() {
        let a = BackendNode(host: "127.0.0.1", port: 8001, weight: 3)
        let registry = [
            RegistryNode(
                id: "y", node: BackendNode(host: "127.0.0.1", port: 8001, weight: 9), draining: false, connections: 0,
                maxConnections: 10, announcedAt: 50),
            RegistryNode(
                id: "z", node: BackendNode(host: "127.0.0.1", port: 8002, weight: 8), draining: false, connections: 5,
                maxConnections: 10, announcedAt: 50),
        ]
        let members = RegistryMembership.members(staticNodes: [a], registry: registry, now: 51, usesLoad: true)
        #expect(members == [a, BackendNode(host: "127.0.0.1", port: 8002, weight: 4)])
    }

    @Test func staticNodesFirstDrainingOut() {
        let a = BackendNode(host: "127.0.0.1", port: 8001)
        let b = BackendNode(host: "127.0.0.1", port: 8002)
        let c = BackendNode(host: "127.0.0.1", port: 8003)
        let registry = [
            RegistryNode(id: "z", node: c, draining: false, connections: 0),
            RegistryNode(id: "y", node: a, draining: false, connections: 0),  // same address as a static node
            RegistryNode(id: "x", node: b, draining: true, connections: 0),
        ]
        #expect(RegistryMembership.members(staticNodes: [a], registry: registry) == [a, c])
    }
}

@Suite struct DrainTests {
    @Test func drainedNodesTakeNoNewConnectionsAndKeepTheirCounts() {
        let nodes = (1...2).map { BackendNode(host: "127.0.0.1", port: 8000 + $0) }
        var table = NodeTable(nodes: nodes)
        let now = NIODeadline.uptimeNanoseconds(1)
        table.connectionOpened("127.0.0.1:8001")
        let drained = table.setDrained("127.0.0.1:8001", true)
        #expect(drained)
        #expect(table.candidates(at: now).map(\.id) == ["127.0.0.1:8002"])
        #expect(table.entries["127.0.0.1:8001"]?.active == 1)
        table.setMembers(nodes)  // a membership refresh does not undo a drain
        #expect(table.candidates(at: now).map(\.id) == ["127.0.0.1:8002"])
        let readied = table.setDrained("127.0.0.1:8001", false)
        #expect(readied)
        #expect(table.candidates(at: now).count == 2)
        let unknown = table.setDrained("127.0.0.1:9999", true)
        #expect(!unknown)
    }
}
