import TestProcesses
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RedisClient
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
import SwitchboardRedis
import Testing

@Suite("ShardedRedisBroker", .serialized, .timeLimit(.minutes(2)))
struct ShardedRedisBrokerTests {
    /// A channel name the shard rule puts on `shard` of `count`.
    func channel(onShard shard: Int, of count: Int, _ base: String) -> String {
        (0..<10_000).lazy.map { "\(base)\($0)" }.first { ChannelShard.index(of: $0, count: count) == shard }!
    }

    @Test("a channel's publish answer and its delivery come on the loop of the channel's hub shard, for every shard")
    func channelsStayOnTheirLoop() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup(threads: 2) { group in
            let loops = Array(group.makeIterator())
            let broker = ShardedRedisBroker(
                configuration: RedisConfiguration(port: redis.port), nodeID: "n1", eventLoops: loops, logger: Logger(label: "test"))
            let onWrongLoop = NIOLockedValueBox<[String]>([])
            let recorder = BrokerConformance.EventRecorder()
            try await broker.start { event in
                if case .publication(let name, _, _) = event, !broker.eventLoop(forChannel: name).inEventLoop {
                    onWrongLoop.withLockedValue { $0.append(name) }
                }
                recorder.record(event)
            }.get()
            let channels = [channel(onShard: 0, of: 2, "a"), channel(onShard: 1, of: 2, "b")]
            for (shard, name) in channels.enumerated() {
                #expect(broker.eventLoop(forChannel: name) === loops[shard])
                try await broker.subscribe(channel: name).get()
                let request = PublishRequest(channel: name, data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 60)
                let published = broker.publish(request)
                #expect(published.eventLoop === loops[shard])
                let answeredOnLoop = try await published.map { _ in loops[shard].inEventLoop }.get()
                #expect(answeredOnLoop)
                try await recorder.wait { $0.publications(in: name).count == 1 }
            }
            #expect(onWrongLoop.withLockedValue { $0 } == [])
            // Node-wide work goes through shard 0 and sees everything.
            try await broker.sendControl(ControlMessage.unsubscribe(user: "u", channel: "c"), to: "n1").get()
            try await recorder.wait { $0.all.contains { if case .control = $0 { true } else { false } } }
            try await broker.shutdown().get()
        }
    }
}
