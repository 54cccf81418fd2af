import Crypto
import Foundation
import NIOCore
import NIOEmbedded
import SwitchboardBroker
@testable import SwitchboardServer
import SwitchboardServerTesting
import Testing

@Suite("Handshake router")
struct HandshakeRouterTests {
    @Test("Sec-WebSocket-Accept: the RFC's example, and 2,000 random keys of every length up to 40 against Foundation's base64 of the SHA-1")
    func acceptValues() {
        #expect(WebSocketUpgrader.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        let characters = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
        for n in 0..<2_000 {
            let key = String((0..<(n % 41)).map { _ in characters.randomElement()! })
            let expected = Data(Insecure.SHA1.hash(data: Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
            #expect(WebSocketUpgrader.acceptValue(forKey: key) == expected, "key \(key)")
        }
    }

    static let handshake = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

    /// Records which way the router sent the connection and what reached the handler after it.
    final class Recorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var received: [UInt8] = []
        var bytes: String { String(decoding: self.received, as: UTF8.self) }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.received += Self.unwrapInboundIn(data).readableBytesView
        }
    }

    final class Routes: @unchecked Sendable {
        var taken: String?
        let recorder = Recorder()
    }

    static func channel(
        _ node: EmbeddedNode<some Broker>,
        _ routes: Routes,
        admission: ConnectionCounts.Admission = .admitted
    ) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: node.loop)
        try channel.pipeline.syncOperations.addHandler(HandshakeRouter(
            node: node.context,
            admission: admission,
            headDeadline: .now() + .seconds(10),
            installHTTP: { channel, _ in
                routes.taken = "http"
                try channel.pipeline.syncOperations.addHandler(routes.recorder)
            },
            installWebSocket: { channel in
                routes.taken = "websocket"
                try channel.pipeline.syncOperations.addHandler(routes.recorder)
            }))
        return channel
    }

    @Test("a plain /ws handshake is answered at once, even split over reads, and frames right behind it go on")
    func shortPath() throws {
        let node = try EmbeddedNode()
        let routes = Routes()
        let channel = try Self.channel(node, routes)
        let bytes = Array(Self.handshake.utf8) + [0x81, 0x80, 0, 0, 0, 0]
        try channel.writeInbound(ByteBuffer(bytes: bytes[..<5]))
        try channel.writeInbound(ByteBuffer(bytes: bytes[5..<40]))
        #expect(routes.taken == nil)
        try channel.writeInbound(ByteBuffer(bytes: bytes[40...]))
        #expect(routes.taken == "websocket")
        let response = String(buffer: try #require(try channel.readOutbound(as: ByteBuffer.self)))
        #expect(response == "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
            + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        #expect(routes.recorder.received == [0x81, 0x80, 0, 0, 0, 0])
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: HandshakeRouter.self) }
    }

    /// NIO's upgrade handler hands every request with an `Upgrade` header to the upgrader; the
    /// upgrader must hold it to what the short path holds a handshake to (RFC 6455 4.2.1). Before
    /// 2026-12-04 the HTTP path upgraded an HTTP/1.0 request, one without `Connection: upgrade` and
    /// a `POST` (`FuzzNodeHandshake`). `Origin` sends each one down the HTTP path.
    @Test("the HTTP path upgrades only what the short path would", arguments: [
        ("GET /ws HTTP/1.1", "Connection: Upgrade", "dGhlIHNhbXBsZSBub25jZQ==", true),
        ("GET /ws HTTP/1.1", "Connection: keep-alive, upgrade", "dGhlIHNhbXBsZSBub25jZQ==", true),
        ("GET /ws HTTP/1.0", "Connection: Upgrade", "dGhlIHNhbXBsZSBub25jZQ==", false),
        ("GET /ws HTTP/1.1", "Connection: keep-alive", "dGhlIHNhbXBsZSBub25jZQ==", false),
        ("GET /ws HTTP/1.1", "X-No-Connection: upgrade", "dGhlIHNhbXBsZSBub25jZQ==", false),
        // Keys that are not 16 bytes of base64 go the HTTP path, which takes them (earlier balancers
        // health-check with one).
        ("GET /ws HTTP/1.1", "Connection: Upgrade", "c3dpdGNoYm9hcmQtY2hlY2s=", true),
        ("POST /ws HTTP/1.1", "Connection: Upgrade", "dGhlIHNhbXBsZSBub25jZQ==", false),
        // One key field, read as written: an empty `Sec-WebSocket-Key:` beside a real one (the
        // canonical form drops it: 101 before 2026-12-05, `FuzzNodeHandshake`), two keys in one
        // field, an empty second version field.
        ("GET /ws HTTP/1.1", "Connection: Upgrade", "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", false),
        ("GET /ws HTTP/1.1", "Connection: Upgrade", "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key:", false),
        ("GET /ws HTTP/1.1", "Connection: Upgrade", "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==", false),
        ("GET /ws HTTP/1.1", "Connection: Upgrade", "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version:", false),
        // A key with a trailing comma: the canonical form read it as the key without it.
        ("GET /ws HTTP/1.1", "Connection: Upgrade", "dGhlIHNhbXBsZSBub25jZQ==,", false),
    ])
    func httpPathUpgradesOnlyHandshakes(_ requestLine: String, _ connection: String, _ key: String, _ upgrades: Bool) throws {
        let node = try EmbeddedNode()
        let channel = try node.openHTTP()
        let head = "\(requestLine)\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\nUpgrade: websocket\r\n\(connection)\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        _ = try? channel.writeInbound(ByteBuffer(string: head))
        node.loop.run()
        let answer = String(decoding: channel.readAllOutbound(), as: UTF8.self)
        if upgrades {
            #expect(answer.hasPrefix("HTTP/1.1 101 "), "\(answer)")
        } else {
            #expect(!answer.contains(" 101 "), "\(answer)")
            #expect(answer.hasPrefix("HTTP/1.1 4") || answer.hasPrefix("HTTP/1.0 4"), "\(answer)")
        }
        _ = try? channel.finish(acceptAlreadyClosed: true)
        node.shutdown()
    }

    /// The head's end is searched incrementally (only new bytes at each read, so a head trickled
    /// a byte at a time costs O(size)): it must be found wherever the reads cut it, the blank line
    /// itself included, and one byte at a time.
    @Test("the head's end is found wherever the reads cut it")
    func headEndAcrossReads() throws {
        let bytes = Array(Self.handshake.utf8)
        for cut in 1..<bytes.count {
            let node = try EmbeddedNode()
            let routes = Routes()
            let channel = try Self.channel(node, routes)
            try channel.writeInbound(ByteBuffer(bytes: bytes[..<cut]))
            #expect(routes.taken == nil, "cut at \(cut)")
            try channel.writeInbound(ByteBuffer(bytes: bytes[cut...]))
            #expect(routes.taken == "websocket", "cut at \(cut)")
        }
        let node = try EmbeddedNode()
        let routes = Routes()
        let channel = try Self.channel(node, routes)
        for (index, byte) in bytes.enumerated() {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            #expect((routes.taken == nil) == (index < bytes.count - 1))
        }
        #expect(routes.taken == "websocket")
    }

    @Test("header names in any case, a query, and token lists take the short path", arguments: [
        "GET /ws?token=abc HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUPGRADE:websocket\r\nConnection:  keep-alive ,  upgrade \r\nSEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version:13\r\n\r\n",
        // NIO's client (and switchboard-bench) says `Content-Length: 0`: no body, as a handshake must.
        "GET /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ])
    func shortPathVariants(_ request: String) throws {
        let node = try EmbeddedNode()
        let routes = Routes()
        let channel = try Self.channel(node, routes)
        try channel.writeInbound(ByteBuffer(string: request))
        #expect(routes.taken == "websocket")
        #expect(String(buffer: try #require(try channel.readOutbound(as: ByteBuffer.self))).contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
    }

    @Test("everything else goes to the HTTP pipeline with every byte", arguments: [
        "GET /ws?a b HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nbroken line\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /ws HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "GET /wsx HTTP/1.1\r\n\r\n",
        "GET /echo HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        "GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        // A body on a handshake, or two lengths: the HTTP path judges (and refuses) them.
        "GET /ws HTTP/1.1\r\nContent-Length: 5\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nContent-Length: 00\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ])
    func handOver(_ request: String) throws {
        let node = try EmbeddedNode()
        let routes = Routes()
        let channel = try Self.channel(node, routes)
        try channel.writeInbound(ByteBuffer(string: request))
        #expect(routes.taken == "http")
        #expect(routes.recorder.bytes == request)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
    }

    @Test("a head longer than the limit without an end goes to the HTTP pipeline (and its limits)")
    func oversizeHead() throws {
        let node = try EmbeddedNode()
        let routes = Routes()
        let channel = try Self.channel(node, routes)
        let request = "GET /ws HTTP/1.1\r\nX: " + String(repeating: "a", count: HandshakeRouter.maximumHeadSize)
        try channel.writeInbound(ByteBuffer(string: request))
        #expect(routes.taken == "http")
        #expect(routes.recorder.bytes == request)
    }

    @Test("a draining node sends handshakes to the HTTP pipeline, which refuses them")
    func draining() throws {
        let node = try EmbeddedNode()
        node.context.setDraining()
        let routes = Routes()
        let channel = try Self.channel(node, routes)
        try channel.writeInbound(ByteBuffer(string: Self.handshake))
        #expect(routes.taken == "http")
    }

    @Test("a bare CR in a handshake head is refused with 400 and the socket closed (it would split a header)")
    func bareCR() throws {
        let node = try EmbeddedNode()
        let routes = Routes()
        let channel = try Self.channel(node, routes)
        let request = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX: a\rSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try channel.writeInbound(ByteBuffer(string: request))
        #expect(routes.taken == nil)
        let response = String(buffer: try #require(try channel.readOutbound(as: ByteBuffer.self)))
        #expect(response.hasPrefix("HTTP/1.1 400 "))
        #expect(!channel.isActive)
        #expect(HandshakeRouter.hasBareCR(ByteBuffer(string: "a\r\nb\rc").readableBytesView[...]))
        #expect(!HandshakeRouter.hasBareCR(ByteBuffer(string: "a\r\nb\r\n").readableBytesView[...]))
    }

    @Test("a connection over the caps gets its WebSocket handshake and then close 3504; HTTP gets 503 with Retry-After")
    func refusedOverCap() throws {
        let node = try EmbeddedNode()
        let routes = Routes()
        let channel = try Self.channel(node, routes, admission: .nodeFull)
        try channel.writeInbound(ByteBuffer(string: Self.handshake))
        #expect(routes.taken == nil)
        var response = try #require(try channel.readOutbound(as: ByteBuffer.self))
        let text = String(buffer: response)
        #expect(text.hasPrefix("HTTP/1.1 101 "))
        let headEnd = try #require(text.range(of: "\r\n\r\n"))
        response.moveReaderIndex(forwardBy: text.utf8.distance(from: text.startIndex, to: headEnd.upperBound))
        #expect(response.readInteger(as: UInt8.self) == 0x88)  // FIN + close
        _ = response.readInteger(as: UInt8.self)
        #expect(response.readInteger(as: UInt16.self) == 3504)
        #expect(!channel.isActive)

        let http = try Self.channel(node, Routes(), admission: .addressFull)
        try http.writeInbound(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        let refusal = String(buffer: try #require(try http.readOutbound(as: ByteBuffer.self)))
        #expect(refusal.hasPrefix("HTTP/1.1 503 "))
        #expect(refusal.contains("Retry-After: "))
        let body = try #require(refusal.components(separatedBy: "\r\n\r\n").last)
        #expect(refusal.contains("Content-Length: \(body.utf8.count)\r\n"))
        #expect(!http.isActive)
    }

    @Test("a head that trickles in past its deadline gets 408 and the socket is closed")
    func headDeadline() throws {
        let node = try EmbeddedNode()
        let routes = Routes()
        let channel = EmbeddedChannel(loop: node.loop)
        try channel.pipeline.syncOperations.addHandler(HandshakeRouter(
            node: node.context,
            headDeadline: node.loop.now + .seconds(5),
            installHTTP: { _, _ in routes.taken = "http" },
            installWebSocket: { _ in routes.taken = "websocket" }))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        for byte in "GET /ws HTTP/1.1\r\nUpgrade: webs".utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            node.loop.advanceTime(by: .milliseconds(250))
            if !channel.isActive { break }
        }
        #expect(routes.taken == nil)
        #expect(!channel.isActive)
        let response = String(buffer: try #require(try channel.readOutbound(as: ByteBuffer.self)))
        #expect(response.hasPrefix("HTTP/1.1 408 "))
    }
}
