import NIOCore
import SwitchboardCore
@testable import SwitchboardServer
import Testing

@Suite("SessionDirectory")
struct SessionDirectoryTests {
    @Test("sessions are found by client and by user, counted by transport, and leave without a trace")
    func lifecycle() {
        var directory = SessionDirectory()
        directory.register(client: "c1", user: "alice", loop: 0, transport: .websocket)
        directory.register(client: "c2", user: "alice", loop: 1, transport: .sse)
        directory.register(client: "c3", user: "", loop: 1, transport: .websocket)
        #expect(directory.count == 3)
        #expect(directory.countByTransport[TransportName.websocket.index] == 2)
        #expect(Set(directory.sessions(client: nil, user: "alice").map(\.client)) == ["c1", "c2"])
        #expect(directory.sessions(client: "c1", user: "alice").count == 2, "a client named twice is one target")
        #expect(directory.sessions(client: "c3", user: nil).map(\.loop) == [1])
        directory.unregister(client: "c1", user: "alice", transport: .websocket)
        directory.unregister(client: "c1", user: "alice", transport: .websocket)
        directory.unregister(client: "c2", user: "alice", transport: .sse)
        directory.unregister(client: "c3", user: "", transport: .websocket)
        #expect(directory.count == 0)
        #expect(directory.countByTransport.allSatisfy { $0 == 0 }, "an unknown or repeated leave counts nothing")
        #expect(directory.sessions(client: nil, user: "alice").isEmpty)
    }
}

@Suite("FanoutBatcher")
struct FanoutBatcherTests {
    static func message(_ text: String) -> OutboundMessage { OutboundMessage(copying: ByteBuffer(string: text), allocator: ByteBufferAllocator()) }

    @Test("one flush per tick; consecutive publications of a channel become one batch per loop")
    func batching() {
        var batcher = FanoutBatcher(loopCount: 2)
        let scheduled1 = batcher.enqueue(.publication(channel: "a", offset: 1, time: 0, Self.message("1")), loop: 0)
        #expect(scheduled1)
        let scheduled2 = batcher.enqueue(.publication(channel: "a", offset: 2, time: 0, Self.message("2")), loop: 0)
        #expect(!scheduled2)
        let scheduled3 = batcher.enqueue(.publication(channel: "a", offset: 3, time: 0, Self.message("3")), loop: 0)
        #expect(!scheduled3)
        let scheduled4 = batcher.enqueue(.publication(channel: "b", offset: 1, time: 0, Self.message("x")), loop: 0)
        #expect(!scheduled4)
        let scheduled5 = batcher.enqueue(.publication(channel: "a", offset: 1, time: 0, Self.message("1")), loop: 1)
        #expect(!scheduled5)
        let taken = batcher.take()
        #expect(batcher.isEmpty)
        #expect(taken.map(\.loop) == [0, 1])
        #expect(taken[0].ops.count == 2)
        guard case .batch(let batch) = taken[0].ops[0] else {
            Issue.record("expected a batch, got \(taken[0].ops[0])")
            return
        }
        #expect(batch.firstOffset == 1)
        #expect(batch.lastOffset == 3)
        let scheduled6 = batcher.enqueue(.publication(channel: "a", offset: 4, time: 0, Self.message("4")), loop: 0)
        #expect(scheduled6, "a new tick schedules a flush again")
    }

    @Test("a hole in offsets starts a new batch rather than joining one")
    func holes() {
        var batcher = FanoutBatcher(loopCount: 1)
        _ = batcher.enqueue(.publication(channel: "a", offset: 1, time: 0, Self.message("1")), loop: 0)
        _ = batcher.enqueue(.publication(channel: "a", offset: 3, time: 0, Self.message("3")), loop: 0)
        #expect(batcher.take()[0].ops.count == 2)
    }
}
