import NIOCore
import RESP
@testable import RedisClient
@_spi(Harness) import SwitchboardRedis
import Testing

/// The Redis Cluster rules as values, without a server: slots, redirections, the slot map, URLs.
@Suite("Redis Cluster rules")
struct RedisClusterRulesTests {
    @Test("key slots: CRC16 (XMODEM) of the hash tag or the whole key, as the cluster specification's examples")
    func slots() {
        #expect(RedisHashSlot.slot(of: "123456789") == 0x31C3 % 16_384)  // the specification's CRC16 check value
        #expect(RedisHashSlot.slot(of: "foo") == 12_182)
        #expect(RedisHashSlot.slot(of: "{user1000}.following") == RedisHashSlot.slot(of: "{user1000}.followers"))
        #expect(RedisHashSlot.slot(of: "{user1000}.following") == RedisHashSlot.slot(of: "user1000"))
        // An empty tag hashes the whole key; the first "{" and the first "}" after it decide.
        #expect(RedisHashSlot.slot(of: "foo{}{bar}") != RedisHashSlot.slot(of: "bar"))
        #expect(RedisHashSlot.slot(of: "foo{{bar}}zap") == RedisHashSlot.slot(of: "{bar"))
        #expect(RedisHashSlot.slot(of: "foo{bar}{zap}") == RedisHashSlot.slot(of: "bar"))
        #expect(RedisHashSlot.slot(of: "") == 0)
    }

    @Test("every key of a channel shares one slot, whatever braces the channel name holds")
    func channelKeysShareASlot() {
        var slots = Set<UInt16>()
        for channel in ["chat:lobby", "a}b", "{x}", "}", "}{", "}}x", "{", "{}", "emoji 🎉", String(repeating: "}", count: 255)] {
            let keys = RedisBroker.keys(ofChannel: channel)
            #expect(Set(keys.map { RedisHashSlot.slot(of: $0) }).count == 1, "\(channel): \(keys)")
            #expect(keys[0].contains(channel))
            slots.insert(RedisHashSlot.slot(of: keys[0]))
        }
        #expect(slots.count > 3)  // channels spread over slots
    }

    @Test("MOVED and ASK replies parse; anything else, or out of range, does not")
    func redirections() {
        #expect(RedisRedirection(errorMessage: "MOVED 3999 127.0.0.1:6381")
            == RedisRedirection(kind: .moved, slot: 3999, address: RedisNodeAddress(host: "127.0.0.1", port: 6381)))
        #expect(RedisRedirection(errorMessage: "ASK 16383 ::1:7000")
            == RedisRedirection(kind: .ask, slot: 16_383, address: RedisNodeAddress(host: "::1", port: 7000)))
        #expect(RedisRedirection(errorMessage: "MOVED 12 :7001")?.address == RedisNodeAddress(host: "", port: 7001))
        for bad in ["MOVED 16384 h:1", "MOVED -1 h:1", "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h", "MOVED 1", "NOSCRIPT x y",
            "ASK 99999999999999999999 h:1", "CLUSTERDOWN The cluster is down", "MOVED 1 h:1 extra"]
        {
            #expect(RedisRedirection(errorMessage: bad) == nil, "\(bad)")
        }
    }

    @Test("a CLUSTER SLOTS reply becomes a map; MOVED corrects one slot; unknown endpoints are the answering host")
    func slotMap() throws {
        func bulk(_ s: String) -> String { "$\(s.utf8.count)\r\n\(s)\r\n" }
        let wire = "*3\r\n"
            + "*4\r\n:0\r\n:5460\r\n*3\r\n\(bulk("127.0.0.1")):7000\r\n\(bulk("id-a"))*3\r\n\(bulk("127.0.0.1")):7003\r\n\(bulk("id-d"))"
            + "*3\r\n:5461\r\n:10922\r\n*3\r\n\(bulk("")):7001\r\n\(bulk("id-b"))"
            + "*3\r\n:10923\r\n:16383\r\n*3\r\n\(bulk("?")):7002\r\n\(bulk("id-c"))"
        let answeredBy = RedisNodeAddress(host: "10.0.0.9", port: 7001)
        var map = try RedisClusterSlotMap(slotsReply: RESPToken(validated: ByteBuffer(string: wire)), answeredBy: answeredBy)
        #expect(map.coversAllSlots)
        #expect(map.nodes.count == 3)
        #expect(map.node(forSlot: 0) == RedisNodeAddress(host: "127.0.0.1", port: 7000))
        #expect(map.node(forSlot: 5460) == RedisNodeAddress(host: "127.0.0.1", port: 7000))
        #expect(map.node(forSlot: 5461) == RedisNodeAddress(host: "10.0.0.9", port: 7001))
        #expect(map.node(forSlot: 16_383) == RedisNodeAddress(host: "10.0.0.9", port: 7002))
        #expect(map.node(forSlot: 16_384) == nil)
        map.assign(100, to: RedisNodeAddress(host: "127.0.0.1", port: 7002))
        #expect(map.node(forSlot: 100) == RedisNodeAddress(host: "127.0.0.1", port: 7002))
        #expect(map.node(forSlot: 99) == RedisNodeAddress(host: "127.0.0.1", port: 7000))

        let partial = try RedisClusterSlotMap(
            slotsReply: RESPToken(validated: ByteBuffer(string: "*1\r\n*3\r\n:0\r\n:99\r\n*2\r\n\(bulk("h")):1\r\n")), answeredBy: answeredBy)
        #expect(!partial.coversAllSlots)
        #expect(partial.node(forSlot: 100) == nil)
        for bad in ["*1\r\n*3\r\n:10\r\n:5\r\n*2\r\n\(bulk("h")):1\r\n", "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n\(bulk("h")):1\r\n",
            "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n\(bulk("h")):0\r\n", ":1\r\n", "*1\r\n*2\r\n:0\r\n:1\r\n"]
        {
            #expect(throws: RedisError.self) { try RedisClusterSlotMap(slotsReply: RESPToken(validated: ByteBuffer(string: bad)), answeredBy: answeredBy) }
        }
    }

    @Test("redis+cluster:// URLs list the nodes to start from, with shared credentials and TLS")
    func urls() throws {
        let cluster = try RedisConfiguration(url: "redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001,[::1]:7002,h")
        #expect(cluster.isCluster)
        #expect(cluster.clusterNodes == [
            RedisNodeAddress(host: "127.0.0.1", port: 7000), RedisNodeAddress(host: "127.0.0.1", port: 7001),
            RedisNodeAddress(host: "::1", port: 7002), RedisNodeAddress(host: "h", port: 6379),
        ])
        #expect(cluster.host == "127.0.0.1" && cluster.port == 7000 && cluster.password == "pw" && !cluster.useTLS)
        #expect(cluster.node(RedisNodeAddress(host: "x", port: 9)).password == "pw")
        #expect(try RedisConfiguration(url: "rediss+cluster://a:1").useTLS)
        #expect(try !RedisConfiguration(url: "redis://a:1").isCluster)
        for bad in ["redis+cluster://a:1/3", "redis+cluster://a:1,,b:2", "redis+cluster://a:0", "redis+cluster://", "rediscluster://a:1",
            "redis+cluster://" + Array(repeating: "h:1", count: 65).joined(separator: ",")]
        {
            #expect(throws: RedisError.self, "\(bad)") { try RedisConfiguration(url: bad) }
        }
    }

    @Test("a probe out while reads are held on purpose gets no verdict: its time starts over when they resume")
    func shardProbeWhileReadsHeld() {
        var probe = RedisShardProbe(channel: "p:{1}")
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let second = TimeAmount.seconds(1)
        #expect(probe.tick(now: start, interval: second) == .publish(sequence: 1))
        // Held for ten seconds (the node behind on deliveries): no verdict however long.
        for held in 1...10 { probe.readsHeld(at: start + second * Int64(held)) }
        probe.readsHeld(at: start)  // a hold before the probe was sent changes nothing
        #expect(probe.tick(now: start + second * 10 + .milliseconds(500), interval: second) == .publish(sequence: 2))
        // Once reads resume a silent connection is still found.
        #expect(probe.tick(now: start + second * 12, interval: second) == .reconnect)
    }

    @Test("a shard probe publishes each interval and asks for a rebuild only when the last one, a full interval old, never came back")
    func shardProbe() {
        var probe = RedisShardProbe(channel: "p:{1}")
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let second = TimeAmount.seconds(1)
        var action = probe.tick(now: start, interval: second)
        #expect(action == .publish(sequence: 1))
        probe.delivered(ByteBuffer(string: "1"))
        action = probe.tick(now: start + second, interval: second)
        #expect(action == .publish(sequence: 2), "the first came back")
        // The second does not come back: not a full interval yet, then a rebuild.
        action = probe.tick(now: start + second + .milliseconds(500), interval: second)
        #expect(action == .publish(sequence: 3), "sent half an interval ago: another probe, no verdict")
        action = probe.tick(now: start + second * 3, interval: second)
        #expect(action == .reconnect)
        // After the rebuild the count starts over: the next tick probes again.
        action = probe.tick(now: start + second * 4, interval: second)
        #expect(action == .publish(sequence: 4))
        // A publish that failed (master unreachable) does not count against the connection.
        probe.publishFailed(sequence: 4)
        action = probe.tick(now: start + second * 6, interval: second)
        #expect(action == .publish(sequence: 5))
        // Garbage payloads change nothing; a late, older sequence does not move the count back.
        probe.delivered(ByteBuffer(string: "5"))
        probe.delivered(ByteBuffer(string: "x"))
        probe.delivered(ByteBuffer(string: "2"))
        #expect(probe.received == 5)
    }

    @Test("a probe channel is found for any master, in its own slots, however few it serves")
    func shardProbeChannel() throws {
        for range in [0...5460, 16383...16383, 100...100, 5461...10922] {
            let name = try #require(RedisShardProbe.channel(prefix: "sb:probe:n1:0:shard", where: { range.contains(Int($0)) }))
            #expect(range.contains(Int(RedisHashSlot.slot(of: name))), "\(name)")
            #expect(name.hasPrefix("sb:probe:n1:0:shard:{"))
        }
        #expect(RedisShardProbe.channel(prefix: "p", attempts: 1_000, where: { _ in false }) == nil)
    }

    // MARK: shard channel placement

    typealias Placement = RedisShardPlacement<Int>
    static let a = RedisNodeAddress(host: "127.0.0.1", port: 7000)
    static let b = RedisNodeAddress(host: "127.0.0.1", port: 7001)

    /// The actions as text, for tables.
    static func text(_ actions: [Placement.Action]) -> [String] {
        actions.map { action in
            switch action {
            case .subscribe(let name, let node): "subscribe \(name) on \(node.port)"
            case .unsubscribe(let name, let node): "unsubscribe \(name) from \(node.port)"
            case .succeed(let waiters): "succeed \(waiters)"
            case .fail(let waiters): "fail \(waiters)"
            case .refreshMapAndRetry: "refresh map"
            case .followRedirection(let redirection, let name): "follow \(redirection.address.port) for \(name)"
            case .tellResubscribed: "tell resubscribed"
            }
        }
    }

    @Test("a channel is subscribed on its slot's master; callers wait for the confirmation, later ones succeed at once")
    func placementSubscribe() {
        var placement = Placement()
        #expect(Self.text(placement.subscribe("c", waiter: 1, owner: Self.a)) == ["subscribe c on 7000"])
        #expect(Self.text(placement.subscribe("c", waiter: 2, owner: Self.a)).isEmpty, "one SSUBSCRIBE for both")
        #expect(Self.text(placement.confirmed("c", on: Self.b)).isEmpty, "a confirmation from elsewhere changes nothing")
        #expect(Self.text(placement.confirmed("c", on: Self.a)) == ["succeed [1, 2]"])
        #expect(Self.text(placement.subscribe("c", waiter: 3, owner: Self.a)) == ["succeed [3]"])
        #expect(placement.subscribed == ["c": Self.a])
        #expect(Self.text(placement.unsubscribe("c")) == ["unsubscribe c from 7000"])
        #expect(placement.channels.isEmpty)
    }

    @Test("no master for the slot yet: the channel waits for a map and is placed by the retry")
    func placementWaitsForMap() {
        var placement = Placement()
        #expect(Self.text(placement.subscribe("c", waiter: 1, owner: nil)) == ["refresh map"])
        #expect(placement.isWaiting("c"))
        #expect(Self.text(placement.retry { _ in nil }) == ["refresh map"])
        #expect(Self.text(placement.retry { _ in Self.a }) == ["subscribe c on 7000"])
        #expect(Self.text(placement.confirmed("c", on: Self.a)) == ["succeed [1]"])
        #expect(!placement.owesResubscribedNotice, "nothing was lost: a first subscription is no interruption")
    }

    @Test("refusals: a MOVED answer is followed, others refresh the map; the fifth failure in a row gives up and fails the callers")
    func placementRefused() throws {
        var placement = Placement()
        _ = placement.subscribe("c", waiter: 1, owner: Self.a)
        let moved = try #require(RedisRedirection(errorMessage: "MOVED 42 127.0.0.1:7001"))
        #expect(Self.text(placement.refused("c", on: Self.a, redirection: moved)) == ["follow 7001 for c"])
        #expect(placement.isWaiting("c"))
        #expect(Self.text(placement.refused("c", on: Self.a, redirection: nil)).isEmpty, "not subscribing there: stale")
        for attempt in 2...4 {
            #expect(Self.text(placement.place("c", owner: Self.b)) == ["subscribe c on 7001"])
            #expect(Self.text(placement.refused("c", on: Self.b, redirection: nil)) == ["refresh map"], "attempt \(attempt)")
        }
        _ = placement.place("c", owner: Self.b)
        #expect(Self.text(placement.refused("c", on: Self.b, redirection: nil)) == ["fail [1]"])
        #expect(placement.channels.isEmpty)
        // A success in between starts the count over.
        _ = placement.subscribe("d", waiter: 2, owner: Self.a)
        for _ in 1...4 {
            _ = placement.refused("d", on: Self.a, redirection: nil)
            _ = placement.place("d", owner: Self.a)
        }
        _ = placement.confirmed("d", on: Self.a)
        #expect(placement.channels["d"]?.attempts == 0)
    }

    @Test("a map change moves only the channels whose master changed, and the owner hears once all are back")
    func placementMapChange() {
        var placement = Placement()
        _ = placement.subscribe("moves", waiter: nil, owner: Self.a)
        _ = placement.subscribe("stays", waiter: nil, owner: Self.a)
        _ = placement.confirmed("moves", on: Self.a)
        _ = placement.confirmed("stays", on: Self.a)
        let actions = placement.mapChanged { $0 == "moves" ? Self.b : Self.a }
        #expect(Self.text(actions) == ["unsubscribe moves from 7000", "subscribe moves on 7001"])
        #expect(placement.owesResubscribedNotice)
        #expect(Self.text(placement.confirmed("moves", on: Self.b)) == ["tell resubscribed"])
        #expect(!placement.owesResubscribedNotice)
        // A slot with no master now: the channel leaves the old one and waits.
        #expect(Self.text(placement.mapChanged { $0 == "moves" ? nil : Self.a }) == ["unsubscribe moves from 7001", "refresh map"])
        #expect(placement.isWaiting("moves"))
    }

    @Test("Redis dropping a subscription unasked sends it where a fresh map says; the notice waits until every channel is back")
    func placementDropped() {
        var placement = Placement()
        for name in ["x", "y"] {
            _ = placement.subscribe(name, waiter: nil, owner: Self.a)
            _ = placement.confirmed(name, on: Self.a)
        }
        #expect(Self.text(placement.dropped("x", on: Self.b)).isEmpty, "not there: nothing")
        #expect(Self.text(placement.dropped("x", on: Self.a)) == ["refresh map"])
        #expect(Self.text(placement.dropped("y", on: Self.a)) == ["refresh map"])
        let retried = placement.retry { _ in Self.b }
        #expect(Set(Self.text(retried)) == ["subscribe x on 7001", "subscribe y on 7001"])
        #expect(Self.text(placement.confirmed("x", on: Self.b)).isEmpty, "y is not back yet")
        #expect(Self.text(placement.confirmed("y", on: Self.b)) == ["tell resubscribed"])
    }

    @Test("a channel no caller waits for (its subscription was lost) is never given up: retried however often it is refused, and the notice comes once it is back")
    func placementKeepsALostChannel() {
        var placement = Placement()
        _ = placement.subscribe("x", waiter: nil, owner: Self.a)
        _ = placement.confirmed("x", on: Self.a)
        #expect(Self.text(placement.dropped("x", on: Self.a)) == ["refresh map"])
        for attempt in 1...8 {
            #expect(Self.text(placement.retry { _ in Self.b }) == ["subscribe x on 7001"], "attempt \(attempt)")
            #expect(Self.text(placement.refused("x", on: Self.b, redirection: nil)) == ["refresh map"], "attempt \(attempt)")
            #expect(placement.isWaiting("x"))
        }
        _ = placement.retry { _ in Self.b }
        #expect(Self.text(placement.confirmed("x", on: Self.b)) == ["tell resubscribed"])
    }

    @Test("a channel kept for its owner that two nodes keep sending to each other (MOVED) is placed again only after a map refresh once its attempts ran out")
    func placementMovedPingPong() throws {
        var placement = Placement()
        _ = placement.subscribe("x", waiter: nil, owner: Self.a)
        _ = placement.confirmed("x", on: Self.a)
        _ = placement.dropped("x", on: Self.a)
        let toB = try #require(RedisRedirection(errorMessage: "MOVED 42 127.0.0.1:7001"))
        let toA = try #require(RedisRedirection(errorMessage: "MOVED 42 127.0.0.1:7000"))
        var answers: [[String]] = []
        for attempt in 0..<6 {
            let node = attempt % 2 == 0 ? Self.a : Self.b
            _ = placement.place("x", owner: node)
            answers.append(Self.text(placement.refused("x", on: node, redirection: attempt % 2 == 0 ? toB : toA)))
        }
        #expect(answers.prefix(4).allSatisfy { $0.first?.hasPrefix("follow") == true }, "\(answers)")
        #expect(answers.suffix(2).allSatisfy { $0 == ["refresh map"] }, "\(answers)")
        #expect(placement.isWaiting("x"))
    }

    @Test("the owed notice is not held back by a channel that is withdrawn, or given up, while the others are back")
    func placementNoticeAfterWithdrawal() {
        var placement = Placement()
        for name in ["x", "y"] {
            _ = placement.subscribe(name, waiter: nil, owner: Self.a)
            _ = placement.confirmed(name, on: Self.a)
        }
        _ = placement.dropped("x", on: Self.a)
        _ = placement.dropped("y", on: Self.a)
        _ = placement.retry { _ in Self.b }
        #expect(Self.text(placement.confirmed("x", on: Self.b)).isEmpty, "y is not back yet")
        #expect(Self.text(placement.unsubscribe("y")) == ["unsubscribe y from 7001", "tell resubscribed"])

        // A caller's channel given up after its attempts, while the lost one is back already.
        _ = placement.dropped("x", on: Self.b)
        _ = placement.subscribe("new", waiter: 1, owner: Self.a)
        _ = placement.retry { _ in Self.b }
        #expect(Self.text(placement.confirmed("x", on: Self.b)).isEmpty, "new is not subscribed yet")
        for _ in 1...4 {
            _ = placement.refused("new", on: Self.a, redirection: nil)
            _ = placement.place("new", owner: Self.a)
        }
        #expect(Self.text(placement.refused("new", on: Self.a, redirection: nil)) == ["fail [1]", "tell resubscribed"])
    }

    @Test("closing fails every waiter and forgets every channel; a withdrawn channel fails its own waiters")
    func placementClose() {
        var placement = Placement()
        _ = placement.subscribe("a", waiter: 1, owner: Self.a)
        _ = placement.subscribe("b", waiter: 2, owner: nil)
        _ = placement.subscribe("b", waiter: 3, owner: nil)
        #expect(Self.text(placement.unsubscribe("b")) == ["fail [2, 3]"], "waiting: nothing to unsubscribe at Redis")
        #expect(placement.close() == [1])
        #expect(placement.channels.isEmpty)
    }

    @Test("the slot map is read at most once a second however often it is asked for; a request meanwhile is one scheduled read")
    func slotMapRefresh() {
        var refresh = RedisSlotMapRefresh(minimumInterval: .seconds(1))
        let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)
        var action = refresh.requested(now: t0)
        #expect(action == .read)
        action = refresh.requested(now: t0 + .milliseconds(10))
        #expect(action == RedisSlotMapRefresh.Action.none, "a read is under way")
        refresh.finished()
        action = refresh.requested(now: t0 + .milliseconds(300))
        #expect(action == .schedule(deadline: t0 + .seconds(1)), "the last read began 300 ms ago")
        for ms in [400, 500, 900] {
            action = refresh.requested(now: t0 + .milliseconds(Int64(ms)))
            #expect(action == RedisSlotMapRefresh.Action.none, "one scheduled read covers every request")
        }
        action = refresh.timerFired(now: t0 + .seconds(1))
        #expect(action == .read)
        action = refresh.timerFired(now: t0 + .seconds(1))
        #expect(action == RedisSlotMapRefresh.Action.none, "a stray timer reads nothing")
        refresh.finished()
        // Long enough after the last read began: at once.
        action = refresh.requested(now: t0 + .seconds(2))
        #expect(action == .read)
        // A read that failed everywhere counts like one that succeeded.
        refresh.finished()
        #expect(refresh.state == .idle(lastStarted: t0 + .seconds(2)))
    }
}
