import TestProcesses
import Logging
import NIOCore
import NIOPosix
import RedisClient
import RESP
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
import SwitchboardRedis
import Testing

@Suite("RedisBroker when Redis fails", .serialized, .timeLimit(.minutes(5)))
struct RedisBrokerResilienceTests {
    func makeBroker(port: Int, group: any EventLoopGroup, probe: TimeAmount = .milliseconds(300)) -> RedisBroker {
        RedisBroker(
            configuration: RedisConfiguration(port: port),
            nodeID: "n\(UInt32.random(in: 0...UInt32.max))",
            eventLoop: group.next(),
            logger: Logger(label: "test"),
            probeInterval: probe
        )
    }

    @Test("a killed subscriber connection is rebuilt, channels resubscribed, and the node told")
    func subscriberKilled() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let broker = makeBroker(port: redis.port, group: group)
            let recorder = BrokerConformance.EventRecorder()
            try await broker.start { recorder.record($0) }.get()
            try await broker.subscribe(channel: "c").get()
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: Logger(label: "admin"))
            _ = try await admin.send("CLIENT", "KILL", "TYPE", "pubsub").get()
            try await recorder.wait(seconds: 10) { $0.all.contains(BrokerEvent.deliveryInterrupted) }
            // Deliveries resume. (Published until one arrives: the node's probe, which found no
            // subscriber while the connection was down, may rebuild it once more meanwhile, and a
            // pub/sub message sent then is gone; history holds it, which the hub's refill reads.)
            let request = PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 60)
            for _ in 0..<40 where recorder.publications(in: "c").isEmpty {
                _ = try await broker.publish(request).get()
                try? await recorder.wait(seconds: 0.5) { !$0.publications(in: "c").isEmpty }
            }
            #expect(!recorder.publications(in: "c").isEmpty, "no publication arrived live within 20 s")
            try await admin.close().get()
            try await broker.shutdown().get()
        }
    }

    @Test("a subscriber connection that stays open but delivers nothing is found by the probe and rebuilt: the node is told and deliveries resume")
    func subscriberSilent() async throws {
        let redis = try RedisServerProcess()
        let proxy = try await FreezableTCPProxy(targetPort: redis.port)
        try await withEventLoopGroup { group in
            let broker = makeBroker(port: proxy.port, group: group, probe: .seconds(1))
            try await SilentSubscriberCheck.run(broker: broker, channel: "c", proxy: proxy, marker: "SUBSCRIBE")
        }
        await proxy.stop()
    }

    @Test("while Redis is down publishes fail fast; after a restart publishing works and history starts a new epoch")
    func restart() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let broker = makeBroker(port: redis.port, group: group)
            let recorder = BrokerConformance.EventRecorder()
            try await broker.start { recorder.record($0) }.get()
            try await broker.subscribe(channel: "c").get()
            let request = PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 60)
            let before = try await broker.publish(request).get()
            redis.kill()
            await #expect(throws: RedisError.self) { try await broker.publish(request).get() }
            try redis.start()
            try await recorder.wait(seconds: 10) { $0.all.contains(BrokerEvent.deliveryInterrupted) }
            var after: PublishResult?
            for _ in 0..<100 where after == nil {
                after = try? await broker.publish(request).get()
                if after == nil { try await Task.sleep(nanoseconds: 50_000_000) }
            }
            let result = try #require(after)
            #expect(result.position.offset == 1)
            #expect(result.position.epoch != before.position.epoch)
            try await broker.shutdown().get()
        }
    }

    @Test("a channel whose keys are deleted under a running Redis is born again in a new epoch, which reads predicted")
    func keysDeleted() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let broker = makeBroker(port: redis.port, group: group)
            try await broker.start { _ in }.get()
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: Logger(label: "admin"))
            let request = PublishRequest(channel: "lives", data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 60)
            let unborn = try await broker.history(HistoryQuery(channel: "lives", limit: 0)).get().position
            let first = try await broker.publish(request).get().position
            #expect(first == StreamPosition(offset: 1, epoch: unborn.epoch))
            #expect(try await broker.publish(request).get().position.offset == 2)
            for key in ["sb:{lives}:s", "sb:{lives}:m"] { _ = try await admin.send("DEL", .string(key)).get() }
            // The read after the deletion predicts the next life's epoch, which is not the first one's.
            let reborn = try await broker.history(HistoryQuery(channel: "lives", limit: 0)).get().position
            #expect(reborn.offset == 0)
            #expect(reborn.epoch != first.epoch)
            let second = try await broker.publish(request).get().position
            #expect(second == StreamPosition(offset: 1, epoch: reborn.epoch))
            // A third life differs from both.
            for key in ["sb:{lives}:s", "sb:{lives}:m"] { _ = try await admin.send("DEL", .string(key)).get() }
            let third = try await broker.publish(request).get().position
            #expect(third.offset == 1)
            #expect(third.epoch != first.epoch && third.epoch != second.epoch)
            try await admin.close().get()
            try await broker.shutdown().get()
        }
    }

    @Test("renewing a channel's epoch: only from the epoch named, offsets go on, the old epoch's positions no longer recover")
    func renewEpoch() async throws {
        let redis = try RedisServerProcess()
        try await withEventLoopGroup { group in
            let broker = makeBroker(port: redis.port, group: group)
            try await broker.start { _ in }.get()
            let request = PublishRequest(channel: "renew", data: ByteBuffer(string: "x"), historySize: 10, historyTTL: 60)
            _ = try await broker.publish(request).get()
            let before = try await broker.publish(request).get().position
            try await broker.renewEpoch(channel: "renew", ifStill: "not-its-epoch").get()
            #expect(try await broker.history(HistoryQuery(channel: "renew", limit: 0)).get().position == before)
            try await broker.renewEpoch(channel: "renew", ifStill: before.epoch).get()
            let renewed = try await broker.history(HistoryQuery(channel: "renew", limit: 0)).get().position
            #expect(renewed.epoch != before.epoch && renewed.offset == before.offset)
            let next = try await broker.publish(request).get().position
            #expect(next == StreamPosition(offset: before.offset + 1, epoch: renewed.epoch))
            // A second renewal from the old epoch (another node saw the same reuse) changes nothing.
            try await broker.renewEpoch(channel: "renew", ifStill: before.epoch).get()
            #expect(try await broker.history(HistoryQuery(channel: "renew", limit: 0)).get().position == next)
            // A channel that was never published to has nothing to renew and gets no key.
            try await broker.renewEpoch(channel: "never", ifStill: "e").get()
            #expect(try await broker.history(HistoryQuery(channel: "never", limit: 0)).get().position.offset == 0)
            try await broker.shutdown().get()
        }
    }
}
