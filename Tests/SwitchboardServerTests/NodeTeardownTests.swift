import NIOCore
import NIOEmbedded
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@_spi(Harness) import SwitchboardServer
@_spi(Harness) import SwitchboardServerTesting
import Testing

/// A node that served requests, good or malformed, leaves nothing behind once its connections are
/// closed and it is stopped: no reference cycle keeps its parts (hub, sessions, broker) alive. A
/// cycle here is memory a running node never gets back, once per request of that kind.
@Suite("Node teardown")
struct NodeTeardownTests {
    static func request(_ method: String, _ target: String, body: String = "") -> ByteBuffer {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: t\r\n"
        if method == "POST" { head += "Content-Length: \(body.utf8.count)\r\nContent-Type: application/json\r\n" }
        return ByteBuffer(string: head + "\r\n" + body)
    }

    @Test(
        "no part of the node outlives it after any of these requests",
        arguments: [
            ("GET", "/sse", ""), ("GET", "/sse?connect=%7B", ""), ("POST", "/rpc", "{"), ("POST", "/poll", "{"),
            ("POST", "/sse", "{"), ("POST", "/rpc", #"[{"id":1,"ping":{}}]"#),
        ])
    func nothingOutlivesTheNode(method: String, target: String, body: String) throws {
        weak var harness: NodeHarness?
        weak var broker: MemoryBroker?
        do {
            let node = try EmbeddedNode()
            harness = node.harness
            broker = node.broker
            let channel = try node.openHTTP()
            _ = try? channel.writeInbound(Self.request(method, target, body: body))
            node.loop.run()
            _ = channel.readAllOutbound()
            _ = try? channel.finish(acceptAlreadyClosed: true)
            node.shutdown()
        }
        #expect(harness == nil, "the node's harness outlived it")
        #expect(broker == nil, "the broker outlived the node")
    }

    /// A WebSocket handshake that announces a body the client never sends, then the client goes.
    /// NIO's upgrade handler waited for the body's end holding a closure that held itself and the
    /// connection, so every such request leaked its pipeline and with it the node (5.5 KB a request
    /// on a release build; LeakSanitizer, `Fuzz/Sources/FuzzNodeHandshake`). Through the router, as
    /// a running node accepts a connection, and straight on the HTTP pipeline.
    @Test(
        "no part of the node outlives a handshake that announces a body and never sends it",
        arguments: [
            ("Content-Length: 5\r\n", true), ("Transfer-Encoding: chunked\r\n", true), ("Content-Length: 5\r\n", false),
            ("Connection: upgrade\r\nContent-Length: 5\r\n", true), ("Connection: upgrade\r\nContent-Length: 0\r\n", true),
        ])
    func nothingOutlivesAnAbandonedHandshakeBody(bodyHeaders: String, throughRouter: Bool) throws {
        weak var harness: NodeHarness?
        weak var pipeline: ChannelPipeline?
        var answer = ""
        do {
            let node = try EmbeddedNode()
            harness = node.harness
            let channel = try throughRouter ? node.openAccepted() : node.openHTTP()
            pipeline = channel.pipeline
            let head =
                "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                + "Sec-WebSocket-Version: 13\r\n\(bodyHeaders)\r\n"
            _ = try? channel.writeInbound(ByteBuffer(string: head))
            node.loop.run()
            answer = String(decoding: channel.readAllOutbound(), as: UTF8.self)
            _ = try? channel.finish(acceptAlreadyClosed: true)
            node.shutdown()
        }
        // The cycle held the pipeline (handlers, buffers, and through `HTTPHandler` the node), not the
        // channel object, which a closed pipeline lets go.
        #expect(pipeline == nil, "the connection's pipeline outlived a handshake abandoned mid-body")
        #expect(harness == nil, "the node outlived a handshake abandoned mid-body")
        // Without a body (`Content-Length: 0`) the handshake still succeeds.
        if bodyHeaders.hasSuffix("Content-Length: 0\r\n") {
            #expect(answer.hasPrefix("HTTP/1.1 101 "), "\(answer)")
        } else {
            #expect(!answer.hasPrefix("HTTP/1.1 101 "), "\(answer)")
        }
    }

    /// A connection from a trusted proxy goes through `ProxyProtocolHandler` before the router: the
    /// handshake behind a PROXY v2 header or with an `X-Forwarded-For` is answered, one cut off in
    /// the middle of the head is not, and neither leaves any part of the node behind.
    @Test(
        "through a trusted proxy, a handshake is answered and nothing outlives the node",
        arguments: [(true, true), (false, true), (true, false), (false, false)])
    func trustedProxyConnections(proxyHeader: Bool, complete: Bool) throws {
        weak var harness: NodeHarness?
        weak var pipeline: ChannelPipeline?
        var answer = ""
        do {
            var configuration = ServerConfiguration()
            configuration.trustedProxies = ["127.0.0.1"]
            let node = try EmbeddedNode(configuration: configuration)
            harness = node.harness
            let channel = try node.openFromTrustedProxy()
            pipeline = channel.pipeline
            var bytes = ByteBuffer()
            if proxyHeader {
                ProxyProtocolHeader(
                    sourceAddress: "198.51.100.9", sourcePort: 4000, destinationAddress: "10.0.0.2", destinationPort: 80, clientUsedTLS: false
                ).write(into: &bytes)
            }
            let head =
                "GET /ws HTTP/1.1\r\nHost: t\r\n" + (proxyHeader ? "" : "X-Forwarded-For: 198.51.100.9\r\n")
                + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            bytes.writeString(complete ? head : String(head.prefix(40)))
            _ = try? channel.writeInbound(bytes)
            node.loop.run()
            answer = String(decoding: channel.readAllOutbound(), as: UTF8.self)
            _ = try? channel.finish(acceptAlreadyClosed: true)
            node.shutdown()
        }
        #expect(answer.hasPrefix("HTTP/1.1 101 ") == complete, "\(answer)")
        #expect(pipeline == nil, "the connection's pipeline outlived it")
        #expect(harness == nil, "the node outlived a connection from a trusted proxy")
    }

    /// The fuzz target's sequence (`Fuzz/Sources/FuzzHTTPBodies`), where LeakSanitizer found the node
    /// kept alive: a live SSE stream, then `body` posted to it, to `/rpc` and to `/poll`, and a stream
    /// opened with `body` as its `connect`.
    @Test("no part of the node outlives it after the fuzz target's sequence", arguments: ["{", "{}", ""])
    func nothingOutlivesTheFuzzSequence(body: String) throws {
        weak var harness: NodeHarness?
        do {
            let node = try EmbeddedNode()
            harness = node.harness
            var channels: [EmbeddedChannel] = []
            func exchange(_ bytes: ByteBuffer) throws -> String {
                let channel = try node.openHTTP()
                channels.append(channel)
                _ = try? channel.writeInbound(bytes)
                node.loop.run()
                return String(decoding: channel.readAllOutbound(), as: UTF8.self)
            }
            let opened = try exchange(Self.request("GET", "/sse"))
            let session = try #require(opened.split(separator: "\"session\":\"").dropFirst().first?.split(separator: "\"").first)
            _ = try exchange(Self.request("POST", "/sse?session=\(session)", body: body))
            _ = try exchange(Self.request("POST", "/rpc", body: body))
            _ = try exchange(Self.request("POST", "/poll", body: body))
            node.advance(by: .seconds(61))
            _ = try exchange(Self.request("GET", "/sse?connect=\(body.isEmpty ? "" : "%7B")"))
            node.advance(by: .seconds(1))
            for channel in channels { _ = try? channel.finish(acceptAlreadyClosed: true) }
            node.shutdown()
        }
        #expect(harness == nil, "the node's harness outlived it")
    }

    /// The fake broker the fuzz targets, benchmarks and hub tests build nodes on kept the node's event
    /// handler after its shutdown, so each of those nodes stayed alive (LeakSanitizer, FuzzHTTPBodies).
    @Test("a node on the forwarding test broker is let go after its shutdown")
    func forwardingBrokerLetsGo() throws {
        weak var harness: NodeHarness?
        weak var broker: ForwardingBroker?
        do {
            let node = try EmbeddedNode(makeBroker: { ForwardingBroker(eventLoop: $0) })
            harness = node.harness
            broker = node.broker
            let channel = try node.openHTTP()
            _ = try? channel.writeInbound(Self.request("GET", "/sse"))
            node.loop.run()
            _ = try? channel.finish(acceptAlreadyClosed: true)
            node.shutdown()
        }
        #expect(harness == nil, "the node's harness outlived it")
        #expect(broker == nil, "the broker outlived the node")
    }

    /// A kept-alive HTTP API request waits for the broker, and its client goes meanwhile: the answer,
    /// when it comes, must not arm the next request's head deadline, whose timer would hold the
    /// connection's pipeline (and through it the node) until it fires.
    @Test("an API answer that comes after its client went keeps nothing of the connection")
    func answerAfterTheClientWent() throws {
        var configuration = ServerConfiguration()
        configuration.apiKey = "test-key"
        let node = try EmbeddedNode(configuration: configuration, makeBroker: { RacingHistoryBroker(eventLoop: $0) })
        weak var pipeline: ChannelPipeline?
        do {
            let channel = try node.openHTTP()
            pipeline = channel.pipeline
            node.broker.holdsReads = true
            let body = #"{"channel":"c"}"#
            _ = try? channel.writeInbound(ByteBuffer(string:
                "POST /api/history HTTP/1.1\r\nHost: t\r\nAuthorization: apikey test-key\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"))
            node.loop.run()
            #expect(node.broker.held.count == 1)
            _ = try? channel.finish(acceptAlreadyClosed: true)
        }
        node.broker.holdsReads = false
        node.broker.releaseReads()
        node.loop.run()
        #expect(pipeline == nil, "the connection's pipeline outlived its client")
        node.shutdown()
    }
}
