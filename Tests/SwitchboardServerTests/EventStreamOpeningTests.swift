import Foundation
import NIOCore
import NIOEmbedded
import SwitchboardBroker
import SwitchboardCore
@testable import SwitchboardServer
import SwitchboardServerTesting
import Testing

@Suite("Opening an SSE stream: connect params from a POST body, never a token from a URL")
struct EventStreamOpeningTests {
    static let resumeID = ResumeID.encode([("chat", StreamPosition(offset: 7, epoch: "e"))])!

    // MARK: The value type

    @Test("GET: no connect is anonymous; connect is parsed; a token in it is refused before anything else", arguments: [
        #"{"token":"abc"}"#,
        #"{"token":""}"#,
        #"{"subs":{"chat":{}},"token":"x.y.z"}"#,
        #"{"token":{"nested":1}}"#,
        #"{"subs":{"$orders":{"token":"x.y.z"}}}"#,
        #"{"subs":{"chat":{},"$orders":{"offset":1,"epoch":"e","token":"t"}}}"#,
    ])
    func getRefusesTokens(_ connect: String) {
        #expect(EventStreamOpening.query(connect: connect, lastEventID: nil) == .failure(.tokenInURL))
    }

    @Test("GET without a token opens as before, Last-Event-ID positions winning over subs")
    func getAnonymous() throws {
        #expect(try EventStreamOpening.query(connect: nil, lastEventID: nil).get().params == ConnectParams())
        let opened = try EventStreamOpening.query(
            connect: #"{"name":"n","token":null,"subs":{"chat":{"offset":1,"epoch":"e"},"other":{}}}"#,
            lastEventID: Self.resumeID).get()
        #expect(opened.params.name == "n")
        #expect(opened.params.token == nil)
        #expect(opened.params.subs.map(\.channel) == ["chat", "other"])
        #expect(opened.params.subs[0].since == StreamPosition(offset: 7, epoch: "e"))
        guard case .failure(let refusal) = EventStreamOpening.query(connect: "[1]", lastEventID: nil) else {
            Issue.record("a connect that is not an object opened a stream")
            return
        }
        #expect(refusal.status == 400)
    }

    @Test("POST: the body is the connect params; Last-Event-ID header, else lastEventId, else nothing; bearer when no token")
    func postBody() throws {
        let body = ByteBuffer(string: #"{"token":"t1","subs":{"chat":{}},"lastEventId":"\#(Self.resumeID)"}"#)
        let opened = try EventStreamOpening.body(body, lastEventID: nil, bearer: "t2").get()
        #expect(opened.params.token == "t1")
        #expect(opened.params.subs.first?.since == StreamPosition(offset: 7, epoch: "e"))
        let header = try #require(ResumeID.encode([("chat", StreamPosition(offset: 9, epoch: "e"))]))
        #expect(try EventStreamOpening.body(body, lastEventID: header, bearer: nil).get().params.subs.first?.since
            == StreamPosition(offset: 9, epoch: "e"))
        #expect(try EventStreamOpening.body(ByteBuffer(string: #"{"name":"x"}"#), lastEventID: nil, bearer: "t2").get().params.token == "t2")
        #expect(try EventStreamOpening.body(ByteBuffer(string: " \r\n"), lastEventID: nil, bearer: nil).get().params == ConnectParams())
        // A Last-Event-ID that is not ours is ignored, as on GET.
        #expect(try EventStreamOpening.body(ByteBuffer(string: #"{"subs":{"a":{}}}"#), lastEventID: "garbage", bearer: nil).get().params.subs.first?.since == nil)
    }

    @Test("POST: malformed bodies are refused with 400 and a message", arguments: [
        "{", "[]", "\"token\"", #"{"token":5}"#, #"{"subs":[]}"#, #"{"lastEventId":1}"#,
        #"{"id":2,"subscribe":{"channel":"a"}}"#,
        "{\"id\":2,\"ping\":{}}\n{\"id\":3,\"ping\":{}}",
    ])
    func postMalformed(_ text: String) {
        guard case .failure(let refusal) = EventStreamOpening.body(ByteBuffer(string: text), lastEventID: nil, bearer: nil) else {
            Issue.record("\(text) opened a stream")
            return
        }
        #expect(refusal.status == 400)
        #expect(!refusal.message.isEmpty)
    }

    @Test("POST: a body that is not UTF-8 is refused")
    func postNotUTF8() {
        let body = ByteBuffer(bytes: [UInt8(ascii: "{"), 0xC3, 0x28, UInt8(ascii: "}")])
        #expect((try? EventStreamOpening.body(body, lastEventID: nil, bearer: nil).get()) == nil)
    }

    // MARK: The handler, on EmbeddedChannel

    static func request(_ node: EmbeddedNode<MemoryBroker>, _ text: String) throws -> (EmbeddedChannel, String) {
        let channel = try node.openHTTP()
        try channel.writeInbound(ByteBuffer(string: text))
        node.loop.run()
        return (channel, String(decoding: channel.readAllOutbound(), as: UTF8.self))
    }

    static func post(_ body: String, path: String = "/sse", headers: String = "") -> String {
        "POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\(headers)Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    @Test("POST /sse opens a stream: 200 text/event-stream, the connect reply with its session, subscribed as asked")
    func postOpensStream() throws {
        let node = try EmbeddedNode()
        defer { node.shutdown() }
        let (channel, answer) = try Self.request(node, Self.post(#"{"name":"web","subs":{"chat":{}}}"#))
        #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(answer.contains("Content-Type: text/event-stream"))
        let event = try #require(answer.split(separator: "\r\n\r\n", maxSplits: 1).last)
        #expect(event.contains(#"data: {"id":1,"result":{"#))
        #expect(event.contains(#""session":""#))
        #expect(event.contains(#""chat""#))
        #expect(event.contains("\nid: "))
        #expect(channel.isActive)
        _ = try? channel.close().wait()
    }

    @Test("POST /sse?session= still carries commands (a session of a node that is gone is 404, not a new stream)")
    func postSessionStillCommands() throws {
        let node = try EmbeddedNode()
        defer { node.shutdown() }
        let (_, answer) = try Self.request(node, Self.post(#"{"id":2,"ping":{}}"#, path: "/sse?session=gone-0-1.0123456789abcdef0123456789abcdef"))
        #expect(answer.hasPrefix("HTTP/1.1 404 "))
        let (_, malformed) = try Self.request(node, Self.post(#"{"id":2,"ping":{}}"#, path: "/sse?session=%zz"))
        #expect(malformed.hasPrefix("HTTP/1.1 400 "), "a malformed session value is not taken for a stream open")
    }

    @Test("GET /sse with a token in connect is refused 400, telling to POST; without one it streams")
    func getWithTokenRefused() throws {
        let node = try EmbeddedNode()
        defer { node.shutdown() }
        let connect = #"{"token":"eyJhbGciOiJIUzI1NiJ9.e30.c2VjcmV0"}"#.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let (channel, answer) = try Self.request(node, "GET /sse?connect=\(connect) HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        #expect(answer.hasPrefix("HTTP/1.1 400 "))
        #expect(answer.contains(#""code":107"#))
        #expect(answer.contains("POST /sse"))
        #expect(!answer.contains("c2VjcmV0"), "the token is not echoed")
        #expect(channel.isActive, "a 400 keeps the connection")
        let (_, anonymous) = try Self.request(node, "GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        #expect(anonymous.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(anonymous.contains(#"data: {"id":1,"result":{"#))
    }

    @Test("POST /sse with a body over the cap is 413 (declared or sent), and the connection closes")
    func postOversize() throws {
        var configuration = ServerConfiguration()
        configuration.maxMessageSize = 1024
        let node = try EmbeddedNode(configuration: configuration)
        defer { node.shutdown() }
        let big = #"{"name":""# + String(repeating: "x", count: 2000) + #""}"#
        let (declared, answer) = try Self.request(node, Self.post(big))
        #expect(answer.hasPrefix("HTTP/1.1 413 "))
        #expect(!declared.isActive)
        // Chunked: no length up front, refused as soon as the body passes the cap.
        let chunked = "POST /sse HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + String(big.utf8.count, radix: 16) + "\r\n" + big + "\r\n0\r\n\r\n"
        let (sent, chunkedAnswer) = try Self.request(node, chunked)
        #expect(chunkedAnswer.hasPrefix("HTTP/1.1 413 "))
        #expect(!sent.isActive)
    }

    @Test("POST /sse with a malformed body is 400 with a JSON error; no stream starts")
    func postMalformedHandler() throws {
        let node = try EmbeddedNode()
        defer { node.shutdown() }
        let (channel, answer) = try Self.request(node, Self.post(#"{"subs": nope"#))
        #expect(answer.hasPrefix("HTTP/1.1 400 "))
        #expect(answer.contains("Content-Type: application/json"))
        #expect(answer.contains(#""code":107"#))
        #expect(answer.contains("connect params"))
        #expect(!answer.contains("text/event-stream"))
        #expect(channel.isActive)
    }

    @Test("a body that trickles in past the request deadline gets 408")
    func postSlowBody() throws {
        var configuration = ServerConfiguration()
        configuration.requestTimeout = 2
        let node = try EmbeddedNode(configuration: configuration)
        defer { node.shutdown() }
        let channel = try node.openHTTP()
        let before = NIODeadline.now()
        try channel.writeInbound(ByteBuffer(string: "POST /sse HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"name\""))
        // The handler counts the body deadline on the system clock from when the head arrived; the
        // embedded loop's clock is moved to just before it (counted from before the write, so a slow
        // machine cannot carry it past), then past it.
        node.loop.advanceTime(to: before + .milliseconds(1500))
        node.loop.run()
        #expect(channel.isActive, "not before the deadline")
        node.loop.advanceTime(to: .now() + .seconds(3))
        node.loop.run()
        let answer = String(decoding: channel.readAllOutbound(), as: UTF8.self)
        #expect(answer.hasPrefix("HTTP/1.1 408 "))
        #expect(!channel.isActive)
    }

    @Test("preflight: OPTIONS /sse allows POST with Content-Type for an allowed origin only")
    func preflight() throws {
        var configuration = ServerConfiguration()
        configuration.allowedOrigins = ["https://app.example"]
        let node = try EmbeddedNode(configuration: configuration)
        defer { node.shutdown() }
        let ask = { (origin: String) in
            "OPTIONS /sse HTTP/1.1\r\nHost: node.example\r\nOrigin: \(origin)\r\nAccess-Control-Request-Method: POST\r\n"
                + "Access-Control-Request-Headers: content-type, last-event-id\r\n\r\n"
        }
        let (_, allowed) = try Self.request(node, ask("https://app.example"))
        #expect(allowed.hasPrefix("HTTP/1.1 204 "))
        #expect(allowed.contains("Access-Control-Allow-Origin: https://app.example"))
        #expect(allowed.contains("Access-Control-Allow-Methods: GET, POST"))
        #expect(allowed.contains("Access-Control-Allow-Headers: Content-Type, Last-Event-ID"))
        let (_, refused) = try Self.request(node, ask("https://evil.example"))
        #expect(refused.hasPrefix("HTTP/1.1 403 "))
        #expect(!refused.contains("Access-Control-Allow-Origin"))
        // The stream itself carries CORS for the allowed origin, and is refused for another.
        let (_, stream) = try Self.request(node, Self.post("{}", headers: "Origin: https://app.example\r\n"))
        #expect(stream.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(stream.contains("Access-Control-Allow-Origin: https://app.example"))
        let (_, other) = try Self.request(node, Self.post("{}", headers: "Origin: https://evil.example\r\n"))
        #expect(other.hasPrefix("HTTP/1.1 403 "))
    }
}
