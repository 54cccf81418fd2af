import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@testable import SwitchboardServer
import SwitchboardServerTesting
import Testing

/// A real memory broker whose deliveries to the node can be lost on purpose,
/// as a broker link that drops messages would lose them.
final class LossyBroker: ForwardingBroker, @unchecked Sendable {
    /// Offsets whose live delivery is dropped.
    let dropOffsets = NIOLockedValueBox<Set<UInt64>>([])

    override func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void> {
        super.start { event in
            if case .publication(_, let publication, _) = event, self.dropOffsets.withLockedValue({ $0.contains(publication.offset) }) {
                return
            }
            eventHandler(event)
        }
    }
}

@Suite("Hub gap detection and refill")
struct GapRefillTests {
    /// A node on a broker that loses chosen deliveries.
    struct Setup {
        let node: EmbeddedNode<LossyBroker>
        var loop: EmbeddedEventLoop { self.node.loop }
        var broker: LossyBroker { self.node.broker }
        var context: NodeContext { self.node.context }

        init() throws {
            self.node = try EmbeddedNode(makeBroker: { LossyBroker(eventLoop: $0) })
        }

        func session() throws -> TestSession {
            try self.node.session()
        }

        func publish(_ n: Int) {
            for i in 0..<n {
                _ = self.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "\(i)"), historySize: 100, historyTTL: 60))
            }
            self.loop.run()
        }
    }

    @Test("a live publication after a hole waits until the hole is refilled from history")
    func refill() throws {
        let setup = try Setup()
        let s = try setup.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        setup.publish(2)
        setup.broker.dropOffsets.withLockedValue { $0 = [3, 4] }
        setup.publish(4)
        let offsets = try s.messages().compactMap { $0["pub"]?["offset"]?.intValue }
        #expect(offsets == [1, 2, 3, 4, 5, 6])
    }

    @Test("a hole that history no longer holds: subscribers are told (2500), never skipped silently")
    func insufficientState() throws {
        let setup = try Setup()
        let s = try setup.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        setup.publish(1)
        setup.broker.dropOffsets.withLockedValue { $0 = Set(2...120) }
        // 120 publications with history 100: offset 2 is gone from history when 121 arrives.
        for i in 0..<120 {
            _ = setup.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "\(i)"), historySize: 100, historyTTL: 60))
        }
        setup.loop.run()
        let messages = try s.messages()
        #expect(messages.compactMap { $0["pub"]?["offset"]?.intValue } == [1])
        #expect(messages.contains { $0["unsubscribe"]?["code"] == .number("2500") })
    }

    @Test("after an interrupted broker link, every channel is refilled from its last position")
    func interrupted() throws {
        let setup = try Setup()
        let s = try setup.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        setup.publish(1)
        setup.broker.dropOffsets.withLockedValue { $0 = [2, 3] }
        setup.publish(2)
        setup.broker.dropOffsets.withLockedValue { $0 = [] }
        // The broker says its link was down (as RedisSubscriber does after resubscribing).
        setup.broker.deliver(.deliveryInterrupted)
        setup.loop.run()
        let offsets = try s.messages().compactMap { $0["pub"]?["offset"]?.intValue }
        #expect(offsets == [1, 2, 3])
    }
}
