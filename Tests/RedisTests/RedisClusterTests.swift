import Logging
import NIOCore
import NIOPosix
import RESP
import RedisClient
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
import SwitchboardRedis
import TestProcesses
import Testing

/// The cluster client and the broker against a real Redis Cluster (three masters started by the
/// test, with replicas where a failover is tested).
@Suite("Redis Cluster against real redis-servers", .serialized, .timeLimit(.minutes(5)))
struct RedisClusterTests {
    let logger = Logger(label: "test")

    func clusterClient(_ cluster: RedisClusterProcess, on loop: any EventLoop) throws -> RedisClusterClient {
        RedisClusterClient(configuration: try RedisConfiguration(url: cluster.url), eventLoop: loop, logger: self.logger)
    }

    func plainClient(port: Int, on loop: any EventLoop) -> RedisClient {
        RedisClient(configuration: RedisConfiguration(port: port), eventLoop: loop, logger: self.logger)
    }

    @Test("each command reaches the master of its key's slot; our slots are Redis's own (CLUSTER KEYSLOT)")
    func routing() async throws {
        let cluster = try RedisClusterProcess()
        defer { cluster.stop() }
        try await withEventLoopGroup { group in
            let loop = group.next()
            let client = try self.clusterClient(cluster, on: loop)
            let keys = (0..<300).map { "k\($0)" } + ["{tag}a", "{tag}b", "sb:{chat:lobby}:s", "}{", "{}x"]
            for (i, key) in keys.enumerated() { _ = try await client.send("SET", .string(key), .string("v\(i)")).get() }
            var masters = Set<Int>()
            var direct: [Int: RedisClient] = [:]
            for (i, key) in keys.enumerated() {
                let slot = RedisHashSlot.slot(of: key)
                let master = try cluster.masterPort(forSlot: Int(slot))
                masters.insert(master)
                let owner = direct[master] ?? self.plainClient(port: master, on: loop)
                direct[master] = owner
                // The owner has it (any other master would answer MOVED).
                #expect(try await owner.send("GET", .string(key)).get().string == "v\(i)", "\(key)")
                #expect(try await client.send("GET", .string(key)).get().string == "v\(i)")
            }
            #expect(masters.count == 3)
            // Slots computed here match the server's for keys with and without hash tags.
            let any = direct.values.first!
            var generator = SystemRandomNumberGenerator()
            for n in 0..<500 {
                let alphabet = Array("ab{}:xyz01🎉")
                let key = String((0..<Int.random(in: 0...12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }) + "\(n)"
                let expected = try await any.send("CLUSTER", "KEYSLOT", .string(key)).get().int64
                #expect(expected == Int64(RedisHashSlot.slot(of: key)), "\(key)")
            }
            for owner in direct.values { try await owner.close().get() }
            try await client.close().get()
        }
    }

    @Test("rediss+cluster://: TLS to every master (certificates verified), a broker publishes and receives across nodes on it")
    func tls() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let cluster = try RedisClusterProcess(tls: certificates)
        defer { cluster.stop() }
        #expect(cluster.url.hasPrefix("rediss+cluster://"))
        try await withEventLoopGroup { group in
            let client = try self.clusterClient(cluster, on: group.next())
            let keys = (0..<60).map { "tls\($0)" }
            for key in keys { _ = try await client.send("SET", .string(key), .string(key)).get() }
            for key in keys { #expect(try await client.send("GET", .string(key)).get().string == key) }
            #expect(Set(try await client.slotMap.get()?.nodes.map(\.port) ?? []) == Set(cluster.masterPorts))
            try await client.close().get()
            // Without the test authority the certificates cannot be verified: nothing is sent.
            var untrusted = try RedisConfiguration(url: cluster.url)
            untrusted.tlsCAFile = certificates.otherCACertificate
            let refused = RedisClusterClient(configuration: untrusted, eventLoop: group.next(), logger: self.logger)
            await #expect(throws: RedisError.self) { try await refused.send("GET", "tls1").get() }
            try await refused.close().get()
        }
        try await self.withTwoNodes(on: cluster) { nodes in
            try await nodes.publish("over tls")
            try await nodes.events.wait { _ in nodes.received("over tls") }
        }
    }

    @Test("after a slot moves to another master (MOVED), commands follow it and the client's map is corrected")
    func moved() async throws {
        let cluster = try RedisClusterProcess()
        defer { cluster.stop() }
        try await withEventLoopGroup { group in
            let client = try self.clusterClient(cluster, on: group.next())
            let key = "sb:{moving}:s"
            let slot = Int(RedisHashSlot.slot(of: key))
            _ = try await client.send("SET", .string(key), "before").get()
            let source = try cluster.masterPort(forSlot: slot)
            let target = cluster.masterPorts.first { $0 != source }!
            try cluster.migrateSlot(slot, from: source, to: target)
            #expect(try await client.send("GET", .string(key)).get().string == "before")
            _ = try await client.send("SET", .string(key), "after").get()
            #expect(try await client.slotMap.get()?.node(forSlot: UInt16(slot))?.port == target)
            let owner = self.plainClient(port: target, on: group.next())
            #expect(try await owner.send("GET", .string(key)).get().string == "after")
            try await owner.close().get()
            try await client.close().get()
        }
    }

    @Test("during a migration a key already moved is reached through ASK and ASKING, scripts too")
    func ask() async throws {
        let cluster = try RedisClusterProcess()
        defer { cluster.stop() }
        try await withEventLoopGroup { group in
            let client = try self.clusterClient(cluster, on: group.next())
            let moved = "{asking}moved"
            let stays = "{asking}stays"
            let slot = Int(RedisHashSlot.slot(of: moved))
            _ = try await client.send("SET", .string(moved), "m").get()
            _ = try await client.send("SET", .string(stays), "s").get()
            let source = try cluster.masterPort(forSlot: slot)
            let target = cluster.masterPorts.first { $0 != source }!
            try cluster.beginMigration(slot, from: source, to: target)
            try cluster.migrateKey(moved, from: source, to: target)
            #expect(try await client.send("GET", .string(moved)).get().string == "m")
            #expect(try await client.send("GET", .string(stays)).get().string == "s")
            let script = RedisScript("return redis.call('GET', KEYS[1]) .. ARGV[1]")
            #expect(try await client.evaluate(script, keys: [moved], arguments: ["!"]).get().string == "m!")
            // ASK is for one command: the map still names the source.
            #expect(try await client.slotMap.get()?.node(forSlot: UInt16(slot))?.port == source)
            try cluster.finishMigration(slot, to: target)
            try await client.close().get()
        }
    }

    /// Every key on every master, sorted, and their count: a read that wrote must show.
    static func footprint(_ cluster: RedisClusterProcess) throws -> String {
        var keys: [String] = []
        for port in cluster.masterPorts {
            keys += try cluster.redisCLI(port: port, "--raw", "KEYS", "*").split(separator: "\n").map(String.init)
        }
        return "\(keys.count) keys: \(keys.sorted().prefix(20))"
    }

    @Test("the broker contract holds on a cluster: every conformance case, two event loops, one cluster flushed between cases")
    func conformance() async throws {
        let cluster = try RedisClusterProcess()
        defer { cluster.stop() }
        let configuration = try RedisConfiguration(url: cluster.url)
        for check in BrokerConformance.cases {
            for port in cluster.masterPorts { _ = try cluster.redisCLI(port: port, "FLUSHALL") }
            try await withEventLoopGroup(threads: 2) { group in
                let loops = Array(group.makeIterator())
                try await check.run(
                    using: { limits in
                        ShardedRedisBroker(
                            configuration: configuration, nodeID: "n\(UInt32.random(in: 0...UInt32.max))", eventLoops: loops,
                            logger: Logger(label: "test"), limits: limits)
                    },
                    footprint: { _ in try Self.footprint(cluster) }
                )
            }
        }
    }

    /// Two brokers on `cluster` (one publishes, one receives), a channel the receiver subscribes to,
    /// and the moves a test makes with them; shut down when `body` returns.
    struct TwoNodes {
        let publisher: ShardedRedisBroker
        let receiver: ShardedRedisBroker
        let events = BrokerConformance.EventRecorder()
        let channel = "moving:\(UInt32.random(in: 0...UInt32.max))"
        var slot: Int { Int(RedisHashSlot.slot(of: "sb:{\(self.channel)}:s")) }

        @discardableResult
        func publish(_ text: String) async throws -> PublishResult {
            try await self.publisher.publish(
                PublishRequest(channel: self.channel, data: ByteBuffer(string: text), historySize: 100, historyTTL: 600)
            ).get()
        }

        func received(_ text: String) -> Bool {
            self.events.publications(in: self.channel).contains { String(buffer: $0.0.data) == text }
        }

        /// Publishes "probe 1", "probe 2", ... until one arrives live (at most `seconds`); returns how
        /// many were published, nil when none arrived.
        func publishUntilLive(seconds: Int64) async throws -> Int? {
            let deadline = NIODeadline.now() + .seconds(seconds)
            var attempt = 0
            while NIODeadline.now() < deadline {
                attempt += 1
                let text = "probe \(attempt)"
                try await self.publish(text)
                try? await self.events.wait(seconds: 1) { _ in self.received(text) }
                if self.received(text) { return attempt }
            }
            return nil
        }

        func stored() async throws -> (texts: [String], epoch: String) {
            let history = try await self.receiver.history(HistoryQuery(channel: self.channel, sinceOffset: 0, limit: -1)).get()
            return (history.publications.map { String(buffer: $0.data) }, history.position.epoch)
        }
    }

    func withTwoNodes(on cluster: RedisClusterProcess, _ body: (TwoNodes) async throws -> Void) async throws {
        let configuration = try RedisConfiguration(url: cluster.url)
        try await withEventLoopGroup(threads: 2) { group in
            let loops = Array(group.makeIterator())
            let nodes = TwoNodes(
                publisher: ShardedRedisBroker(configuration: configuration, nodeID: "pub", eventLoops: loops, logger: self.logger),
                receiver: ShardedRedisBroker(configuration: configuration, nodeID: "sub", eventLoops: loops, logger: self.logger))
            try await nodes.publisher.start { _ in }.get()
            try await nodes.receiver.start { nodes.events.record($0) }.get()
            do {
                try await nodes.receiver.subscribe(channel: nodes.channel).get()
                try await body(nodes)
            } catch {
                try? await nodes.publisher.shutdown().get()
                try? await nodes.receiver.shutdown().get()
                throw error
            }
            try await nodes.publisher.shutdown().get()
            try await nodes.receiver.shutdown().get()
        }
    }

    @Test("a resharding moves a subscribed channel's slot: the subscription follows it (Redis drops it at the old master) and publications arrive live again, none lost from history")
    func reshardingMovesSubscriptions() async throws {
        let cluster = try RedisClusterProcess()
        defer { cluster.stop() }
        try await self.withTwoNodes(on: cluster) { nodes in
            try await nodes.publish("before")
            try await nodes.events.wait { _ in nodes.received("before") }
            let source = try cluster.masterPort(forSlot: nodes.slot)
            let target = cluster.masterPorts.first { $0 != source }!
            try cluster.migrateSlot(nodes.slot, from: source, to: target)
            let probes = try await nodes.publishUntilLive(seconds: 10)
            let attempts = try #require(probes, "no publication arrived live within 10 s of the resharding")
            #expect(try await nodes.stored().texts == ["before"] + (1...attempts).map { "probe \($0)" })
        }
    }

    @Test("a master dies: its replica takes over; the first publication after it goes through, the other node's subscription moves there (saying deliveries were interrupted), and publications arrive live again")
    func failover() async throws {
        let cluster = try RedisClusterProcess(masters: 3, replicasPerMaster: 1)
        defer { cluster.stop() }
        try await self.withTwoNodes(on: cluster) { nodes in
            let first = try await nodes.publish("one")
            #expect(first.position.offset == 1)
            try await nodes.events.wait { _ in nodes.received("one") }

            let master = try cluster.masterPort(forSlot: nodes.slot)
            cluster.kill(port: master)
            let promoted = try cluster.waitForFailover(ofMasterPort: master, timeout: 30)
            #expect(promoted != master)
            // The first publish after the failover succeeds: it could not reach the dead master,
            // so it waited for a fresh slot map and went to the promoted replica.
            let second = try await nodes.publish("two")
            // The replica had the stream: the offset continues in the same epoch (or a new epoch is announced).
            if second.position.epoch == first.position.epoch { #expect(second.position.offset == 2) }
            // The receiver's subscription moves to the promoted master: within a bounded time a
            // publication arrives live again, and from then on every one does.
            let probes = try await nodes.publishUntilLive(seconds: 15)
            let attempts = try #require(probes, "no publication arrived live within 15 s of the failover")
            let texts = (1...5).map { "after \($0)" }
            for text in texts { try await nodes.publish(text) }
            try await nodes.events.wait(seconds: 5) { _ in texts.allSatisfy(nodes.received) }
            // Deliveries were interrupted (a node then refills its clients from history, where "two" is).
            #expect(nodes.events.all.contains { if case .deliveryInterrupted = $0 { return true } else { return false } })
            let stored = try await nodes.stored()
            if stored.epoch == first.position.epoch {
                #expect(stored.texts == ["one", "two"] + (1...attempts).map { "probe \($0)" } + texts)
            }
        }
    }

    @Test("a shard subscriber connection that stays open but delivers nothing is found by its master's probe and rebuilt: the node is told and deliveries resume")
    func shardSubscriberSilent() async throws {
        let cluster = try RedisClusterProcess()
        defer { cluster.stop() }
        let channel = "quiet:\(UInt32.random(in: 0...UInt32.max))"
        let master = try cluster.masterPort(forSlot: Int(RedisHashSlot.slot(of: "sb:{\(channel)}:c")))
        // Clients reach that master through the proxy (the slot map says so), which can silence a connection.
        let proxy = try await FreezableTCPProxy(targetPort: master)
        try cluster.announce(port: master, as: proxy.port)
        try await withEventLoopGroup { group in
            let broker = RedisBroker(
                configuration: try RedisConfiguration(url: cluster.url), nodeID: "n\(UInt32.random(in: 0...UInt32.max))",
                eventLoop: group.next(), logger: self.logger, probeInterval: .seconds(1))
            try await SilentSubscriberCheck.run(broker: broker, channel: channel, proxy: proxy, marker: "SSUBSCRIBE")
        }
        await proxy.stop()
    }
}
