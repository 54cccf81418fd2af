import NIOCore
import NIOPosix
import SwitchboardBroker
import SwitchboardCore
import Testing

@Suite("MemoryBroker conformance")
struct MemoryBrokerConformanceTests {
    @Test(arguments: BrokerConformance.cases)
    func conformance(_ check: BrokerConformance.Case) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        try await check.run(using: { MemoryBroker(eventLoop: group.next()) })
        try await group.shutdownGracefully()
    }
}

@Suite("MemoryBroker specifics")
struct MemoryBrokerTests {
    final class Clock: @unchecked Sendable {
        var now: Double = 1_000_000
    }

    @Test("channel meta expires after metaTTL: a new epoch and offsets restart")
    func metaExpiry() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let clock = Clock()
        let broker = MemoryBroker(eventLoop: loop, metaTTL: 100, clock: { clock.now })
        let request = PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 10)
        let first = try await broker.publish(request).get()
        try await loop.submit { clock.now += 101 }.get()
        let second = try await broker.publish(request).get()
        #expect(second.position.offset == 1)
        #expect(second.position.epoch != first.position.epoch)
        try await group.shutdownGracefully()
    }

    @Test("idempotency keys expire after their window")
    func idempotencyWindow() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let clock = Clock()
        let broker = MemoryBroker(eventLoop: loop, clock: { clock.now })
        var request = PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 1000, idempotencyKey: "k")
        request.idempotencyWindow = 5
        let first = try await broker.publish(request).get()
        let repeatWithin = try await broker.publish(request).get()
        try await loop.submit { clock.now += 6 }.get()
        let repeatAfter = try await broker.publish(request).get()
        #expect(repeatWithin.duplicate && repeatWithin.position == first.position)
        #expect(!repeatAfter.duplicate && repeatAfter.position.offset == 2)
        try await group.shutdownGracefully()
    }
}
