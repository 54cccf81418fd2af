import TestProcesses
import Logging
import NIOCore
import NIOPosix
import RedisClient
import RESP
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardRedis
import Testing

/// The same broker contract as the memory broker, against a real Redis.
///
/// Each case starts and stops its own `redis-server` (a shared static one was
/// never stopped, and outlived every `swift test` run).
@Suite("RedisBroker conformance", .serialized, .timeLimit(.minutes(5)))
struct RedisBrokerConformanceTests {
    /// Every key, not only the count: a read that swapped one key for another must show.
    static func footprint(_ admin: RedisClient) async throws -> String {
        let keys = try await admin.send("KEYS", "*").get().array?.compactMap(\.string).sorted() ?? []
        let size = try await admin.send("DBSIZE").get().int64 ?? -1
        return "dbsize \(size): \(keys.prefix(20))"
    }

    @Test(arguments: BrokerConformance.cases)
    func conformance(_ check: BrokerConformance.Case) async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup { group in
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: Logger(label: "admin"))
            try await check.run(
                using: { limits in
                    RedisBroker(
                        configuration: RedisConfiguration(port: redis.port),
                        nodeID: "n\(UInt32.random(in: 0...UInt32.max))",
                        eventLoop: group.next(),
                        logger: Logger(label: "test"),
                        limits: limits
                    )
                },
                footprint: { _ in try await Self.footprint(admin) }
            )
            try await admin.close().get()
        }
    }

    /// The same contract through `ShardedRedisBroker` on two loops: channels on both shards,
    /// node-wide work (registry, control, connections per user) on shard 0.
    @Test(arguments: BrokerConformance.cases)
    func shardedConformance(_ check: BrokerConformance.Case) async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup(threads: 2) { group in
            let loops = Array(group.makeIterator())
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: loops[0], logger: Logger(label: "admin"))
            try await check.run(
                using: { limits in
                    ShardedRedisBroker(
                        configuration: RedisConfiguration(port: redis.port),
                        nodeID: "n\(UInt32.random(in: 0...UInt32.max))",
                        eventLoops: loops,
                        logger: Logger(label: "test"),
                        limits: limits
                    )
                },
                footprint: { _ in try await Self.footprint(admin) }
            )
            try await admin.close().get()
        }
    }
}
