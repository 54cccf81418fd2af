import NIOCore
import NIOEmbedded
import NIOWebSocket
@_spi(Harness) @testable import SwitchboardServer
import Testing

/// Collects the messages the frame handler passes on.
final class MessageCollector: ChannelInboundHandler {
    typealias InboundIn = WebSocketMessage
    var messages: [WebSocketMessage] = []
    var closing: [UInt16] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.messages.append(Self.unwrapInboundIn(data))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closing = event as? WebSocketClosing { self.closing.append(closing.code) }
    }
}

@Suite("WebSocketFrameHandler")
struct WebSocketFrameHandlerTests {
    let channel = EmbeddedChannel()
    let collector = MessageCollector()

    init() throws {
        try channel.pipeline.syncOperations.addHandler(WebSocketFrameHandler(maximumMessageSize: 1024))
        try channel.pipeline.syncOperations.addHandler(collector)
    }

    @Test("a message is no larger than its buffer, so NIOAny carries it without a heap box")
    func messageFitsInline() {
        // NIOAny keeps a value of up to three words inline; a larger one costs an allocation per message.
        #expect(MemoryLayout<WebSocketMessage>.size <= MemoryLayout<ByteBuffer>.size)
        #expect(MemoryLayout<WebSocketMessage>.size <= 3 * MemoryLayout<Int>.size)
        let text = WebSocketMessage(isText: true, data: ByteBuffer(string: "t"))
        let binary = WebSocketMessage(isText: false, data: ByteBuffer(string: "b"))
        #expect(text.isText && !binary.isText)
        #expect(String(buffer: text.data) == "t" && String(buffer: binary.data) == "b")
    }

    func send(_ bytes: [UInt8]) throws {
        try channel.writeInbound(ByteBuffer(bytes: bytes))
    }

    func written() throws -> [TestFrames.ServerFrame] {
        var all = ByteBuffer()
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&buffer) }
        return TestFrames.parse(&all)
    }

    @Test("a masked text frame becomes a message")
    func text() throws {
        try send(TestFrames.text(#"{"id":1}"#))
        #expect(collector.messages.count == 1)
        #expect(String(buffer: collector.messages[0].data) == #"{"id":1}"#)
        #expect(collector.messages[0].isText)
    }

    @Test(
        "every payload length and masking key unmasks to the bytes the client sent",
        arguments: [[0x12, 0x34, 0x56, 0x78], [0xFF, 0x00, 0xA5, 0x3C]] as [[UInt8]])
    func unmasking(key: [UInt8]) throws {
        // Lengths around the eight-byte steps of the unmasking loop, and past the 7-bit length.
        let lengths = Array(0...19) + [125, 126, 1000]
        for length in lengths {
            let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            try send(TestFrames.client(opcode: 0x2, payload, key: key))
        }
        #expect(collector.messages.map { Array($0.data.readableBytesView) } == lengths.map { length in
            (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        })
        #expect(collector.messages.allSatisfy { !$0.isText })
    }

    @Test("fragments join into one message; a ping in between is answered")
    func fragments() throws {
        try send(TestFrames.text("hel", fin: false))
        try send(TestFrames.client(opcode: 0x9, Array("p".utf8)))
        try send(TestFrames.client(opcode: 0x0, Array("lo ".utf8), fin: false))
        try send(TestFrames.client(opcode: 0x0, Array("world".utf8)))
        #expect(collector.messages.map { String(buffer: $0.data) } == ["hello world"])
        #expect(try written() == [TestFrames.ServerFrame(fin: true, opcode: 0xA, payload: Array("p".utf8))])
    }

    @Test("the pings of one read are answered in one write, in order, each with its payload")
    func pongsInOneWrite() throws {
        var bytes: [UInt8] = []
        for i in 0..<30 { bytes += TestFrames.client(opcode: 0x9, Array("p\(i)".utf8)) }
        bytes += TestFrames.text("after")
        try send(bytes)
        var writes: [ByteBuffer] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { writes.append(buffer) }
        #expect(writes.count == 1, "one write for 30 pings (was one write and flush each)")
        var all = writes.first ?? ByteBuffer()
        #expect(TestFrames.parse(&all) == (0..<30).map { TestFrames.ServerFrame(fin: true, opcode: 0xA, payload: Array("p\($0)".utf8)) })
        #expect(collector.messages.map { String(buffer: $0.data) } == ["after"])
    }

    @Test("a ping flood is limited: past the burst pings go unanswered, and many more close the connection with 1008")
    func pingFlood() throws {
        // Burst 50, 10/s: in one instant, 50 answered, then refusals; the 21st refusal closes.
        try send(Array((0..<60).map { _ in TestFrames.client(opcode: 0x9, []) }.joined()))
        // (A token more if the machine stalls 0.1 s inside the loop.)
        #expect((50...51).contains(try written().count))
        #expect(collector.closing.isEmpty)
        try send(Array((0..<20).map { _ in TestFrames.client(opcode: 0x9, []) }.joined()))
        let frames = try written()
        #expect(frames.count <= 2 && frames.last?.closeCode == 1008, "no pong past the burst, then the close: \(frames)")
        #expect(collector.closing == [1008])
    }

    @Test("byte-by-byte input gives the same messages")
    func byteByByte() throws {
        let bytes = TestFrames.text("one") + TestFrames.text(String(repeating: "x", count: 300)) + TestFrames.text("three")
        for byte in bytes { try send([byte]) }
        #expect(collector.messages.map { String(buffer: $0.data) } == ["one", String(repeating: "x", count: 300), "three"])
    }

    @Test("protocol errors close with the RFC 6455 code", arguments: [
        (TestFrames.client(opcode: 0x1, Array("a".utf8), masked: false), UInt16(1002)),
        (TestFrames.client(opcode: 0x1, Array("a".utf8), rsv: 0x4), 1002),
        (TestFrames.client(opcode: 0x3, []), 1002),
        (TestFrames.client(opcode: 0xB, []), 1002),
        (TestFrames.client(opcode: 0x0, Array("a".utf8)), 1002),
        (TestFrames.client(opcode: 0x1, [0xC0, 0xAF]), 1007),
        (TestFrames.client(opcode: 0x1, Array(repeating: 0x61, count: 2000)), 1009),
        (TestFrames.client(opcode: 0x9, Array(repeating: 0x61, count: 126)), 1002),
        (TestFrames.client(opcode: 0x9, [], fin: false), 1002),
        (TestFrames.client(opcode: 0x8, [0x03, 0xED]), 1002),
        (TestFrames.client(opcode: 0x8, [0x03]), 1002),
        (TestFrames.client(opcode: 0x8, [0x03, 0xE8, 0xC0]), 1007),
    ] as [([UInt8], UInt16)])
    func protocolErrors(_ bytes: [UInt8], _ code: UInt16) throws {
        try send(bytes)
        let frames = try written()
        #expect(frames.last?.closeCode == code)
        #expect(collector.messages.isEmpty)
        #expect(collector.closing == [code])
    }

    @Test("fragments over the limit close with 1009")
    func fragmentedTooBig() throws {
        try send(TestFrames.client(opcode: 0x1, Array(repeating: 0x61, count: 600), fin: false))
        try send(TestFrames.client(opcode: 0x0, Array(repeating: 0x61, count: 600)))
        #expect(try written().last?.closeCode == 1009)
        #expect(collector.messages.isEmpty)
    }

    @Test("a client close is echoed and the socket closed")
    func clientClose() throws {
        try send(TestFrames.client(opcode: 0x8, [0x03, 0xE8] + Array("bye".utf8)))
        #expect(try written().map(\.closeCode) == [1000])
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }

    @Test("after a server close, data frames are ignored and the peer's close ends the socket")
    func serverClose() throws {
        channel.pipeline.triggerUserOutboundEvent(WebSocketCloseRequest(code: 3001, reason: "shutdown"), promise: nil)
        #expect(try written().map(\.closeCode) == [3001])
        try send(TestFrames.text("late"))
        #expect(collector.messages.isEmpty)
        try send(TestFrames.client(opcode: 0x8, [0x0B, 0xB9]))
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }
}
