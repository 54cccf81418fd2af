import Logging
import NIOCore
import NIOPosix
import RedisClient
import SwitchboardBroker
import SwitchboardRedis
import Testing

/// The same broker contract as the memory broker, against a real Redis.
///
/// Each case starts and stops its own `redis-server` (a shared static one was
/// never stopped, and outlived every `swift test` run).
@Suite("RedisBroker conformance", .serialized, .timeLimit(.minutes(5)))
struct RedisBrokerConformanceTests {
    @Test(arguments: BrokerConformance.cases)
    func conformance(_ check: BrokerConformance.Case) async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
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
