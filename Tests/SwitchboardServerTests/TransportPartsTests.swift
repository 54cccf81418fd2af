import NIOCore
@testable import SwitchboardServer
import Testing

@Suite("HTTP transport parts")
struct TransportPartsTests {
    @Test("query values are percent-decoded, + is a space, bad escapes are dropped")
    func query() {
        let query = HTTPQuery(uri: "/sse?connect=%7B%22subs%22%3A%7B%7D%7D&name=a+b&bad=%zz&empty=&x=1&x=2")
        #expect(query["connect"] == #"{"subs":{}}"#)
        #expect(query["name"] == "a b")
        #expect(query["bad"] == nil)
        #expect(query["empty"] == "")
        #expect(query["x"] == "1")
        #expect(HTTPQuery(uri: "/sse")["connect"] == nil)
        #expect(HTTPQuery.decode("%C3%A9") == "é")
        #expect(HTTPQuery.decode("%FF") == nil)
        // Delimiters are bytes: a combining mark after `&` must not hide the next parameter.
        let marked = HTTPQuery(uri: "/sse?a=1&\u{0301}x=2&session=s")
        #expect(marked["a"] == "1")
        #expect(marked["session"] == "s")
    }

    @Test("a session id names node, loop and client; anything else is refused")
    func sessionID() throws {
        let id = try #require(EventStreamSessionID("nab12c-1-2z.0123456789abcdef0123456789abcdef"))
        #expect(id.node == "nab12c")
        #expect(id.loop == 1)
        #expect(id.client == "nab12c-1-2z")
        #expect(id.secret == "0123456789abcdef0123456789abcdef")
        for bad in [
            "", "nab12c-1-2z", "nab12c-1-2z.short", "nab12c-1-2z.0123456789ABCDEF0123456789abcdef",
            "nab12c-x-2z.0123456789abcdef0123456789abcdef", "nab12c-1.0123456789abcdef0123456789abcdef",
            "-1-2.0123456789abcdef0123456789abcdef", String(repeating: "a", count: 300),
            "nab12c-01-2z.0123456789abcdef0123456789abcdef", "nab12c-+1-2z.0123456789abcdef0123456789abcdef",
            "n\u{0600}-x-1-2z.0123456789abcdef0123456789abcdef",
        ] {
            #expect(EventStreamSessionID(Substring(bad)) == nil, "\(bad)")
        }
    }

    @Test("a collector splits joined objects, answers once as one array, and not after being abandoned")
    func collector() {
        var answers: [String] = []
        let collector = CollectOutput(purpose: .poll, maximumBytes: 1 << 20) { answers.append(String(buffer: $0)) }
        collector.append(ByteBuffer(string: #"{"a":1}"# + "\n" + #"{"b":2}"#))
        collector.append(ByteBuffer(string: #"{"c":"x\ny"}"#))
        #expect(collector.objects.count == 3)
        collector.complete()
        collector.complete()
        collector.append(ByteBuffer(string: "{}"))
        #expect(answers == [#"[{"a":1},{"b":2},{"c":"x\ny"}]"#])
        let abandoned = CollectOutput(purpose: .rpc, maximumBytes: 1 << 20) { answers.append(String(buffer: $0)) }
        abandoned.append(ByteBuffer(string: "{}"))
        abandoned.abandon()
        abandoned.complete()
        #expect(answers.count == 1)
    }
}

@Suite("OutboundMessage")
struct OutboundMessageTests {
    @Test("the WebSocket frame is the header written in front of the same payload bytes", arguments: [0, 1, 125, 126, 65_535, 65_536, 70_000])
    func framing(length: Int) {
        let text = String(repeating: "x", count: length)
        let message = OutboundMessage(allocator: ByteBufferAllocator(), capacity: length) { $0.writeString(text) }
        #expect(message.byteCount == length)
        #expect(String(buffer: message.payload) == text)
        let frame = message.webSocketFrame
        #expect(frame.getInteger(at: frame.readerIndex, as: UInt8.self) == 0x81, "FIN and text")
        let second = frame.getInteger(at: frame.readerIndex + 1, as: UInt8.self)!
        let headerLength: Int
        let declared: Int
        switch second {
        case 126:
            headerLength = 4
            declared = Int(frame.getInteger(at: frame.readerIndex + 2, as: UInt16.self)!)
        case 127:
            headerLength = 10
            declared = Int(frame.getInteger(at: frame.readerIndex + 2, as: UInt64.self)!)
        default:
            headerLength = 2
            declared = Int(second)
        }
        #expect(second & 0x80 == 0, "server frames are not masked")
        #expect(declared == length)
        #expect(frame.readableBytes == headerLength + length)
        #expect(frame.getSlice(at: frame.readerIndex + headerLength, length: length) == message.payload)
        // One buffer, two views: the frame view shares the payload's storage.
        frame.withUnsafeReadableBytes { framed in
            message.payload.withUnsafeReadableBytes { payload in
                #expect(framed.baseAddress! + headerLength == payload.baseAddress!)
            }
        }
    }
}
