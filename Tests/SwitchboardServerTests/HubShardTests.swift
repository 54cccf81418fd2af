import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@_spi(Harness) @testable import SwitchboardServer
@_spi(Harness) import SwitchboardServerTesting
import Testing

@Suite("Hub shards", .timeLimit(.minutes(3)))
struct HubShardTests {
    @Test("a join's live publications settle it only when they follow the read's top without a hole, in its epoch")
    func liveFollowsTheRead() {
        let top = StreamPosition(offset: 50, epoch: "e")
        func buffered(_ list: [(UInt64, String)]) -> ArraySlice<BufferedPublication> {
            ArraySlice(list.map { BufferedPublication(offset: $0.0, epoch: $0.1, message: OutboundMessage(allocator: ByteBufferAllocator()) { $0.writeString("x") }) })
        }
        #expect(HubShard.liveFollows(buffered([]), top: top))
        #expect(HubShard.liveFollows(buffered([(49, "e"), (50, "e"), (51, "e"), (52, "e")]), top: top))
        #expect(!HubShard.liveFollows(buffered([(52, "e")]), top: top))  // 51 is missing
        #expect(!HubShard.liveFollows(buffered([(51, "e"), (53, "e")]), top: top))
        #expect(!HubShard.liveFollows(buffered([(51, "f")]), top: top))  // another epoch
        #expect(!HubShard.liveFollows(buffered([(1, "f")]), top: top))  // an epoch restarted at 1
        #expect(HubShard.liveFollows(buffered([(0, ""), (51, "e")]), top: top))  // offset 0: no history
    }

    @Test("a channel belongs to the shard its name hashes to; the memory broker shards by the same rule on the same loops")
    func shardRule() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 4)
        let loops = Array(group.makeIterator())
        let broker = MemoryBroker(eventLoops: loops)
        let hub = Hub(eventLoops: loops, broker: broker, presenceTTL: 60, logger: Logger(label: "test"))
        #expect(hub.shards.count == 4)
        #expect(hub.eventLoop === loops[0])
        var owners = Set<Int>()
        for i in 0..<200 {
            let name = "ns:channel-\(i)"
            let shard = hub.shard(for: name)
            #expect(shard.index == ChannelShard.index(of: name, count: 4))
            #expect(shard.eventLoop === loops[shard.index])
            #expect(broker.eventLoop(forChannel: name) === shard.eventLoop)
            owners.insert(shard.index)
        }
        #expect(owners == [0, 1, 2, 3])
        try await group.shutdownGracefully()
    }

    @Test("a publish to a channel owned by the caller's loop completes on that loop, without a hop")
    func noHopOnOwningLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 4)
        let loops = Array(group.makeIterator())
        let broker = MemoryBroker(eventLoops: loops)
        let delivered = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<(Bool, Bool), any Error>) in
            let name = (0..<100).map { "c\($0)" }.first { ChannelShard.index(of: $0, count: 4) == 2 }!
            loops[2].execute {
                _ = broker.subscribe(channel: name)
                let future = broker.publish(PublishRequest(channel: name, data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 60))
                // Completed before returning: the broker ran on this loop, inline.
                let completed = NIOLockedValueBox(false)
                future.whenComplete { _ in completed.withLockedValue { $0 = true } }
                let inline = completed.withLockedValue { $0 }
                broker.publish(PublishRequest(channel: name, data: ByteBuffer(string: "2"), historySize: 10, historyTTL: 60))
                    .whenComplete { result in
                        continuation.resume(returning: (inline, loops[2].inEventLoop && (try? result.get().position.offset) == 2))
                    }
            }
        }
        #expect(delivered.0, "a publish on the owning loop completes inline")
        #expect(delivered.1, "and on that loop")
        try await group.shutdownGracefully()
    }

    /// Sends control messages nowhere: a forwarded command waits for an answer that never comes.
    final class SilentControlBroker: ForwardingBroker, @unchecked Sendable {
        override func sendControl(_ message: ControlMessage, to node: String?) -> EventLoopFuture<Void> {
            self.eventLoop.makeSucceededVoidFuture()
        }
    }

    @Test("stopping the hub answers the SSE commands it forwarded and still waits for (503), and forwards no more")
    func stopAnswersForwardedCommands() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let broker = SilentControlBroker(eventLoop: loop)
        let hub = Hub(eventLoops: [loop], broker: broker, presenceTTL: 60, logger: Logger(label: "test"))
        let fanout = LoopFanout(eventLoop: loop, index: 0)
        try await hub.start(fanouts: [fanout]).get()
        // Left waiting, the forward's promise outlived the loops (its 5 s timer never runs once they
        // are shut down): a hang in release builds, a crash ("leaking promise") in debug ones.
        let waiting = hub.forwardSessionCommands(session: "s", commands: "[]", to: "other", from: "this", timeout: .seconds(60))
        try await hub.stop().get()
        #expect(try await waiting.get() == .rejected(status: 503, message: "node stopping"))
        let late = hub.forwardSessionCommands(session: "s", commands: "[]", to: "other", from: "this", timeout: .seconds(60))
        #expect(try await late.get() == .rejected(status: 503, message: "node stopping"))
        _ = try await broker.shutdown().get()
        try await group.shutdownGracefully()
    }
}

/// Counts the flushes that reach the socket.
final class FlushCounter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = ByteBuffer
    var flushes = 0

    func flush(context: ChannelHandlerContext) {
        self.flushes += 1
        context.flush()
    }
}

@Suite("Publish reply and echo")
struct PublishFlushTests {
    @Test("a publisher subscribed to its channel gets the reply and the echo in one flush")
    func oneFlush() throws {
        let node = try EmbeddedNode()
        let counter = FlushCounter()
        let session = try node.session()
        try session.channel.pipeline.syncOperations.addHandler(counter, position: .first)
        try session.send(#"{"id":1,"connect":{}}"#)
        try session.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        _ = try session.messages()
        for round in 0..<3 {
            let before = counter.flushes
            try session.send(#"{"id":\#(3 + round),"publish":{"channel":"c","data":\#(round)}}"#)
            let messages = try session.messages()
            #expect(counter.flushes - before == 1, "round \(round)")
            #expect(messages.compactMap { $0["id"]?.intValue } == [3 + round])
            #expect(messages.compactMap { $0["pub"]?["offset"]?.intValue } == [1 + round])
        }
    }
}
