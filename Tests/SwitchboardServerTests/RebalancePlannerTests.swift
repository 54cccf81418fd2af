import NIOConcurrencyHelpers
import NIOEmbedded
import NIOHTTP1
import NIOCore
import SwitchboardCore
@_spi(Harness) @testable import SwitchboardServer
@_spi(Harness) import SwitchboardServerTesting
import Testing

@Suite("RebalancePlanner")
struct RebalancePlannerTests {
    /// A made-up clock: `at(s)` is `s` seconds after an arbitrary start.
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    static func at(_ seconds: Double) -> NIODeadline { start + .nanoseconds(Int64(seconds * 1e9)) }

    static let settings = RebalancePlanner.Settings(tolerance: 0.10, hold: 10, window: 30, rate: 200)

    /// Ticks every `step` seconds from `from` to `to`, with counts from `counts(t, askedSoFar)`; returns
    /// (time, ask) of every tick that asked, and the rounds started.
    static func run(
        _ planner: inout RebalancePlanner, from: Double, to: Double, step: Double = 0.25,
        counts: (Double, Int) -> (own: Int, peers: [Int])
    ) -> (asks: [(t: Double, n: Int)], rounds: Int) {
        var asks: [(t: Double, n: Int)] = []
        var rounds = 0
        var asked = 0
        var t = from
        while t <= to + 1e-9 {
            let (own, peers) = counts(t, asked)
            let result = planner.tick(own: own, peers: peers, now: at(t))
            if result.startedRound { rounds += 1 }
            if result.ask > 0 {
                asks.append((t, result.ask))
                planner.didAsk(result.ask)
                asked += result.ask
            }
            t += step
        }
        return (asks, rounds)
    }

    @Test("alone, or at or under (1 + ε) × mean, nothing moves whatever the time")
    func balancedNeverAsks() {
        var planner = RebalancePlanner(settings: Self.settings)
        #expect(planner.tick(own: 1000, peers: [], now: Self.at(0)).ask == 0)
        #expect(planner.tick(own: 1000, peers: [], now: Self.at(100)) == .init(ask: 0, startedRound: false, imbalance: 1))
        // mean of (1100, 900, 1000) = 1000; 1100 is exactly (1 + 0.10) × mean: not over.
        let result = Self.run(&planner, from: 200, to: 260) { _, _ in (1100, [900, 1000]) }
        #expect(result.asks.isEmpty && result.rounds == 0)
        #expect(planner.phase == .balanced)
        #expect(planner.tick(own: 1100, peers: [900, 1000], now: Self.at(261)).imbalance == 1.1)
    }

    @Test("over for less than the hold: no round; the hold restarts after a dip")
    func holdMustBeContinuous() {
        var planner = RebalancePlanner(settings: Self.settings)
        // Over from 0 to 9.75 s, under at 9.75, over again from 10 s: a round only at 20 s.
        let result = Self.run(&planner, from: 0, to: 19.75) { t, _ in
            (t >= 9.7 && t < 9.8) ? (500, [500]) : (600, [300])
        }
        #expect(result.rounds == 0 && result.asks.isEmpty)
        let next = planner.tick(own: 600, peers: [300], now: Self.at(20))
        #expect(next.startedRound && next.ask == 1)
    }

    @Test("scale-out 2 -> 4 nodes: each full node asks exactly its excess, spread over the window, within the rate")
    func scaleOutMovesExcessOverWindow() throws {
        var planner = RebalancePlanner(settings: Self.settings)
        // 4,000 here, 4,000 on the other old node, two new empty nodes: mean 2,000, excess 2,000.
        // Asked clients leave at once; the new nodes fill up in the registry a couple of seconds later.
        let result = Self.run(&planner, from: 0, to: 100) { t, asked in
            (4000 - asked, [4000, asked / 2, asked / 2])
        }
        #expect(result.rounds == 1)
        let total = result.asks.reduce(0) { $0 + $1.n }
        #expect(total == 2000)
        let first = try #require(result.asks.first), last = try #require(result.asks.last)
        #expect(first.t == 10)  // after the hold
        #expect(last.t >= 10 + 29 && last.t <= 10 + 30)  // spread over the window
        // Never faster than the rate: by any time, at most rate × elapsed + 1 asked since the start.
        var cumulative = 0
        for ask in result.asks {
            cumulative += ask.n
            #expect(Double(cumulative) <= 200 * (ask.t - 10) + 1 + 1e-9)
        }
        // Evenly: within any 1 s of the round, at most 2,000 / 30 + 1 asked.
        for ask in result.asks {
            let inSecond = result.asks.filter { $0.t >= ask.t && $0.t < ask.t + 1 }.reduce(0) { $0 + $1.n }
            #expect(inSecond <= 2000 / 30 + 2)
        }
        #expect(planner.phase == .balanced)
    }

    @Test("clients in transit (gone from here, not yet counted elsewhere) start no second round: at most a trim of ε × mean")
    func inTransitDoesNotBounce() {
        var planner = RebalancePlanner(settings: .init(tolerance: 0.1, hold: 2, window: 4, rate: 200))
        // 300 here and 300 on the other old node, two new nodes; the registry shows the new nodes' clients
        // only 12 s after they were asked to move (slow clients, stale registry), and the other old node's
        // count drops at once as it moves its own excess.
        // The total was 600 for a long time before the scale-out (the peak must not expire meanwhile).
        for t in stride(from: -60.0, to: 0, by: 1) { _ = planner.tick(own: 300, peers: [300], now: Self.at(t)) }
        let result = Self.run(&planner, from: 0, to: 40) { t, asked in
            let landed = t < 18 ? 0 : 300
            return (300 - asked, [t < 2 ? 300 : 150, landed / 2, landed / 2])
        }
        // The round asks the excess, 150. The total then looks steady at 300 for 12 s (half the clients
        // invisible), so the look after the round sees a mean of 75: the trim is capped at ε × 150 = 15.
        #expect(result.rounds <= 2)
        let asked = result.asks.reduce(0) { $0 + $1.n }
        #expect(asked >= 150 && asked <= 150 + 15)
    }

    @Test("a round that stopped high because the registry counted moving clients twice is trimmed to max/min <= 1 + ε")
    func doubleCountedRoundIsTrimmed() {
        var planner = RebalancePlanner(settings: .init(tolerance: 0.1, hold: 2, window: 4, rate: 200))
        // Two old nodes of 300, two new empty ones. The other old node moves its 150 over 0..8 s; the
        // registry shows its count 2 s late, while the new nodes count arrivals at once: 37 clients are
        // counted twice, and this node's round (from 2 s) aims at a mean of about 159, not 150. At 160 it
        // is under 1.1 × 150, so no second round would start, yet 160 / 145 is over 1.10.
        func other(_ t: Double) -> Int { 300 - Int(min(150, max(0, t) * 18.75)) }
        var own = 300
        var final: [Int] = []
        let result = Self.run(&planner, from: 0, to: 40) { t, asked in
            own = 300 - asked
            let arrived = (300 - other(t)) + asked
            final = [own, other(t), arrived / 2, arrived - arrived / 2]
            return (own, [other(t - 2), arrived / 2, arrived - arrived / 2])
        }
        let asked = result.asks.reduce(0) { $0 + $1.n }
        #expect(result.rounds == 2)  // the round, then the trim
        #expect(asked <= 165)  // ≤ 1.1 × this node's excess of 150
        let spread = Double(final.max() ?? 0) / Double(max(1, final.min() ?? 0))
        #expect(spread <= 1.10, "final counts \(final)")
        #expect(planner.phase == .balanced)
    }

    @Test("the rate caps a big excess: the round lasts excess ÷ rate when that is longer than the window")
    func rateStretchesTheRound() throws {
        var planner = RebalancePlanner(settings: .init(tolerance: 0.1, hold: 1, window: 5, rate: 100))
        let result = Self.run(&planner, from: 0, to: 40, step: 0.1) { _, asked in (3000 - asked, [asked]) }
        let total = result.asks.reduce(0) { $0 + $1.n }
        #expect(total == 1500)
        let last = try #require(result.asks.last)
        #expect(last.t >= 1 + 14.8)  // 1,500 at 100/s: 15 s, not 5
        var cumulative = 0
        for ask in result.asks {
            cumulative += ask.n
            #expect(Double(cumulative) <= 100 * (ask.t - 1) + 1 + 1e-6)
        }
    }

    @Test("a round stops once the node is down to the mean it started from")
    func stopsAtTarget() {
        var planner = RebalancePlanner(settings: .init(tolerance: 0.1, hold: 0, window: 10, rate: 1000))
        // 1,000 here, 0 there: excess 500; clients also leave by themselves, 40 per tick.
        let result = Self.run(&planner, from: 0, to: 20) { t, asked in
            (max(0, 1000 - asked - Int(t * 4) * 40), [asked + Int(t * 4) * 40])
        }
        let total = result.asks.reduce(0) { $0 + $1.n }
        #expect(total < 500)
        #expect(result.rounds == 1)
    }

    @Test("asks that fall short (too few clients may move) are asked again later in the round, and the round ends anyway")
    func shortfallCarriesOver() {
        var planner = RebalancePlanner(settings: .init(tolerance: 0.1, hold: 0, window: 4, rate: 1000))
        var own = 200
        var asked = 0
        var rounds = 0
        var t = 0.0
        while t <= 30 {
            let step = planner.tick(own: own, peers: [asked], now: Self.at(t))
            if step.startedRound { rounds += 1 }
            // Only 10 clients may move per tick.
            let done = min(step.ask, 10)
            planner.didAsk(done)
            asked += done
            own -= done
            t += 0.25
        }
        #expect(asked == 100)
        #expect(own == 100)
        #expect(rounds == 1)
    }

    @Test("startNow skips the hold once; a second round needs a new hold")
    func startNowSkipsHold() {
        var planner = RebalancePlanner(settings: Self.settings)
        planner.startNow()
        let first = planner.tick(own: 300, peers: [100], now: Self.at(0))
        #expect(first.startedRound && first.ask == 1)
        #expect(first.imbalance == 1.5)
        // Finish that round (size 100 over 30 s) without the node getting under target: it ends at 30 s.
        var t = 0.25
        while t <= 31 {
            let step = planner.tick(own: 300, peers: [100], now: Self.at(t))
            planner.didAsk(step.ask)
            #expect(!step.startedRound)
            t += 0.25
        }
        if case .moving = planner.phase { Issue.record("the round should be over after its window") }
        let again = planner.tick(own: 300, peers: [100], now: Self.at(35))
        #expect(!again.startedRound)
    }

    @Test("counts from a hostile or broken registry (negative) do not trap")
    func negativeCounts() {
        var planner = RebalancePlanner(settings: .init(tolerance: -1, hold: -5, window: -1, rate: -3))
        let step = planner.tick(own: -5, peers: [-100, Int.max, Int.max], now: Self.at(0))
        #expect(step.ask == 0)
        let huge = planner.tick(own: Int.max, peers: [Int.max, 0], now: Self.at(0.5))
        #expect(huge.ask >= 0)
        _ = planner.tick(own: 10, peers: [0, 0], now: Self.at(1))
    }

    @Test("shares split an ask over loops by their sessions, never more than a loop holds")
    func shares() {
        #expect(NodeRebalancer.shares(of: 10, over: [50, 50]) == [5, 5])
        #expect(NodeRebalancer.shares(of: 3, over: [1, 0, 10]) == [0, 0, 3])
        #expect(NodeRebalancer.shares(of: 100, over: [2, 3]) == [2, 3])
        #expect(NodeRebalancer.shares(of: 5, over: [0, 0]) == [0, 0])
        #expect(NodeRebalancer.shares(of: 7, over: [10, 10, 10]).reduce(0, +) == 7)
        #expect(NodeRebalancer.shares(of: 7, over: [-4, 10]) == [0, 7])
    }
}

@Suite("LoopFanout.askToMove")
struct AskToMoveTests {
    @Test("asks at most N connected sessions that connected before the cut-off, with a 3002 push and close")
    func asksOldSessionsOnly() throws {
        let node = try EmbeddedNode()
        var old: [TestSession] = []
        for _ in 0..<6 {
            let session = try node.session()
            try session.send(#"{"id":1,"connect":{}}"#)
            _ = try session.frames()
            old.append(session)
        }
        let cutoff = NIODeadline.now()
        let young = try node.session()
        try young.send(#"{"id":1,"connect":{}}"#)
        _ = try young.frames()
        let unconnected = try node.session()
        let fanout = node.context.fanouts[0]
        #expect(fanout.sessionCount == 7)

        #expect(fanout.askToMove(upTo: 4, connectedBefore: cutoff, code: .rebalance) == 4)
        #expect(fanout.sessionCount == 3)
        var moved = 0
        for session in old {
            let frames = try session.frames()
            guard let close = frames.last?.closeCode else { continue }
            #expect(close == 3002)
            let push = frames.filter { $0.opcode == 0x1 }.flatMap { try! JSONParser().parseSequence($0.payload) }.last
            #expect(push?["disconnect"]?["code"] == .number("3002"))
            #expect(push?["disconnect"]?["reconnect"] == .bool(true))
            moved += 1
        }
        #expect(moved == 4)
        // Only two old ones are left to ask; the young and the unconnected ones never are.
        #expect(fanout.askToMove(upTo: 10, connectedBefore: cutoff, code: .rebalance) == 2)
        #expect(fanout.askToMove(upTo: 10, connectedBefore: cutoff, code: .rebalance) == 0)
        #expect(try young.frames().last?.closeCode == nil)
        #expect(try unconnected.frames().last?.closeCode == nil)
        #expect(fanout.sessionCount == 1)
    }
}

@Suite("POST /api/rebalance")
struct RebalanceAPITests {
    @Test("the server API's rebalance asks for a round without the hold; only with the api key")
    func apiRequestsARound() throws {
        var configuration = ServerConfiguration()
        configuration.apiKey = "k"
        let node = try EmbeddedNode(configuration: configuration)
        let api = ServerAPI(node: node.context)
        let refused = api.handle(method: "rebalance", authorization: "apikey wrong", body: ByteBuffer())
        node.loop.run()
        #expect(try refused.wait().status == .unauthorized)
        #expect(!node.context.takeRebalanceRequest())
        let answered = api.handle(method: "rebalance", authorization: "apikey k", body: ByteBuffer())
        node.loop.run()
        let response = try answered.wait()
        #expect(response.status == .ok)
        #expect(String(buffer: response.body) == #"{"result":{"rebalance":true}}"#)
        #expect(node.context.takeRebalanceRequest())
        #expect(!node.context.takeRebalanceRequest())
    }
}

@Suite("Rebalance options")
struct RebalanceOptionsTests {
    @Test("environment, config file and range checks")
    func loading() throws {
        var configuration = ServerConfiguration()
        #expect(configuration.rebalance && configuration.rebalanceHold == 10 && configuration.rebalanceMinAge == 600)
        try configuration.apply(environment: [
            "SWITCHBOARD_REBALANCE": "false", "SWITCHBOARD_REBALANCE_MIN_AGE": "5", "SWITCHBOARD_REBALANCE_TOLERANCE": "0.2",
        ])
        #expect(!configuration.rebalance && configuration.rebalanceMinAge == 5 && configuration.rebalanceTolerance == 0.2)
        try configuration.apply(
            file: JSONObject([
                ("rebalance", .bool(true)), ("rebalanceHold", .number("3")), ("rebalanceWindow", .number("4")),
                ("rebalanceRate", .number("50")),
            ]))
        #expect(configuration.rebalance && configuration.rebalanceHold == 3 && configuration.rebalanceWindow == 4)
        #expect(configuration.rebalanceRate == 50)
        #expect(throws: ConfigurationError.self) { try configuration.set("rebalanceHold", text: "-1") }
        #expect(throws: ConfigurationError.self) { try configuration.set("rebalanceRate", text: "1e300") }
        #expect(throws: ConfigurationError.self) { try configuration.set("rebalance", text: "maybe") }
    }

    @Test("a client that connects while the node drains is told to reconnect elsewhere at once (3001), and the drain does not wait for it")
    func connectDuringDrainIsAskedToGo() throws {
        let node = try EmbeddedNode()
        var early: [TestSession] = []
        for _ in 0..<2 {
            let session = try node.session()
            try session.send(#"{"id":1,"connect":{}}"#)
            _ = try session.frames()
            early.append(session)
        }
        // A WebSocket opened before the drain, its connect sent after it started.
        let late = try node.session()
        node.context.setDraining()
        // Two clients over 10 s: one asked at once, the other 5 s later.
        let drained = node.context.fanouts[0].drain(over: .seconds(10), code: .shutdown)
        let done = NIOLockedValueBox(false)
        drained.whenSuccess { done.withLockedValue { $0 = true } }
        node.loop.run()
        try late.send(#"{"id":1,"connect":{}}"#)
        let frames = try late.frames()
        #expect(frames.last?.closeCode == 3001)
        let messages = frames.filter { $0.opcode == 0x1 }.flatMap { try! JSONParser().parseSequence($0.payload) }
        #expect(!messages.contains { $0["id"] == .number("1") && $0["result"] != nil })
        #expect(messages.last?["disconnect"]?["code"] == .number("3001"))
        // Once the clients the drain found are gone, it is over: it does not wait out its window.
        #expect(!done.withLockedValue { $0 })
        node.loop.advanceTime(by: .seconds(6))
        node.loop.run()
        #expect(try early.allSatisfy { try $0.frames().last?.closeCode == 3001 })
        #expect(done.withLockedValue { $0 })
    }
}
