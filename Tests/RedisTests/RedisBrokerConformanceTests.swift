import Logging
import NIOCore
import NIOPosix
import RedisClient
import SwitchboardBroker
import SwitchboardRedis
import Testing

/// The same broker contract as the memory broker, against a real Redis.
@Suite("RedisBroker conformance", .serialized)
struct RedisBrokerConformanceTests {
    static let redis: RedisServerProcess? = try? RedisServerProcess()

    @Test(arguments: BrokerConformance.cases)
    func conformance(_ check: BrokerConformance.Case) async throws {
        let redis = try #require(Self.redis, "redis-server could not be started (is it installed?)")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        try await check.run(using: {
            RedisBroker(
                configuration: RedisConfiguration(port: redis.port),
                nodeID: "n\(UInt32.random(in: 0...UInt32.max))",
                eventLoop: group.next(),
                logger: Logger(label: "test")
            )
        })
        try await group.shutdownGracefully()
    }
}
