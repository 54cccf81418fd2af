import FuzzRedisSupport
import NIOCore
import NIOEmbedded
import SwitchboardBroker
import SwitchboardCore
import SwitchboardServerTesting

/// The HTTP transports' JSON bodies through a whole node, as a Redis-backed node reads them.
///
/// The input is a body, optionally followed by a NUL byte and the JSON of a `Last-Event-ID`
/// (sent base64url-encoded, as the server makes it). Each input gets a fresh node on
/// `RedisLikeBroker` (the memory broker with `RedisBroker`'s own offset and range arithmetic and a
/// fixed epoch `e`), and goes through NIO's HTTP decoder, `HTTPHandler` and `ClientSession` as:
/// `POST /sse?session=` commands on a live SSE stream, `POST /rpc` commands, a `POST /poll` body
/// (its timeout run out on the loop's clock), and `GET /sse?connect=<body>` with the
/// `Last-Event-ID`. Every number in the input also goes straight to the Redis broker's range and
/// TTL helpers. Nothing may crash or leak; every answer must be a well-formed HTTP response with a
/// status the transport documents and a JSON body.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    let body: ArraySlice<UInt8>
    let resume: ArraySlice<UInt8>?
    if let nul = bytes.firstIndex(of: 0) {
        body = bytes[..<nul]
        resume = bytes[(nul + 1)...]
    } else {
        body = bytes[...]
        resume = nil
    }
    checkRedisArithmetic(bytes)
    runNode(body: Array(body), resume: resume.map(Array.init))
    return 0
}

// MARK: Redis arithmetic on every number of the input

/// Every run of digits (with a sign, fraction or exponent) as an offset, a limit and a TTL.
func checkRedisArithmetic(_ bytes: [UInt8]) {
    var i = 0
    while i < bytes.count {
        guard isNumberByte(bytes[i]) else {
            i += 1
            continue
        }
        var j = i
        while j < bytes.count, isNumberByte(bytes[j]) { j += 1 }
        let text = String(decoding: bytes[i..<j], as: UTF8.self)
        i = j
        let offset = UInt64(text)
        let limit = Int(text) ?? (text.hasPrefix("-") ? Int.min : Int.max)
        checkRange(sinceOffset: offset, limit: limit)
        checkRange(sinceOffset: offset.map { $0 &- 1 }, limit: -1)
        checkRange(sinceOffset: offset.map { $0 &+ 1 }, limit: 0)
        if let seconds = Double(text) {
            checkWhole(seconds)
            checkWhole(seconds * 1000)
            checkWhole(-seconds)
        }
    }
}

func isNumberByte(_ byte: UInt8) -> Bool {
    (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+")
        || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E")
}

// MARK: The node

/// An embedded node on `RedisLikeBroker` and its HTTP connections, by index.
final class HTTPNode {
    let node: EmbeddedNode<RedisLikeBroker>
    private var channels: [EmbeddedChannel] = []

    init() {
        do {
            self.node = try EmbeddedNode(makeBroker: { RedisLikeBroker(eventLoop: $0) })
        } catch {
            fatalError("the embedded node did not start: \(error)")
        }
    }

    var broker: RedisLikeBroker { self.node.broker }
    var loop: EmbeddedEventLoop { self.node.loop }

    /// A new connection on the node's HTTP pipeline; its index for `send` and `read`.
    func open() -> Int {
        do {
            self.channels.append(try self.node.openHTTP())
        } catch {
            fatalError("fuzz HTTP pipeline: \(error)")
        }
        return self.channels.count - 1
    }

    /// Request bytes into connection `index`, then everything runnable on the loop.
    func send(_ index: Int, _ bytes: [UInt8]) {
        // Decoder errors close the connection: an expected outcome.
        _ = try? self.channels[index].writeInbound(ByteBuffer(bytes: bytes))
        self.loop.run()
    }

    /// The bytes connection `index` has written since the last read.
    func read(_ index: Int) -> [UInt8] { self.channels[index].readAllOutbound() }

    /// Moves the loop's clock (poll and `/rpc` timeouts, sweeps).
    func advance(seconds: Int64) { self.node.advance(by: .seconds(seconds)) }

    /// Closes every connection and stops the node and its broker.
    func shutdown() {
        for channel in self.channels { _ = try? channel.finish(acceptAlreadyClosed: true) }
        self.channels = []
        self.node.shutdown()
    }
}

func runNode(body: [UInt8], resume: [UInt8]?) {
    let node = HTTPNode()
    defer { node.shutdown() }
    seedHistory(node)

    // An SSE stream to post commands to; its connect reply names the session.
    let stream = node.open()
    node.send(stream, request("GET", "/sse"))
    let opened = node.read(stream)
    check(statusCode(opened) == 200, "GET /sse without parameters was refused: \(text(opened))")
    guard let session = sessionID(in: opened) else { fatalError("no session in the SSE connect reply: \(text(opened))") }

    let posted = exchange(node, request("POST", "/sse?session=" + session, body: body))
    checkResponse(posted, "POST /sse", allowed: [202, 400, 413])

    let rpc = exchange(node, request("POST", "/rpc", body: body))
    checkResponse(rpc, "POST /rpc", allowed: [200, 400, 401, 413])

    let poll = node.open()
    node.send(poll, request("POST", "/poll", body: body))
    var answer = node.read(poll)
    if answer.isEmpty {
        node.advance(seconds: 61)  // past the longest poll timeout
        answer = node.read(poll)
    }
    checkResponse(answer, "POST /poll", allowed: [200, 400, 401, 413, 429])

    var headers: [(String, String)] = []
    if let resume { headers.append(("Last-Event-ID", Base64URL.encode(resume))) }
    let resumed = node.open()
    node.send(resumed, request("GET", "/sse?connect=" + percentEncode(body), headers: headers))
    let streamed = node.read(resumed)
    if let status = statusCode(streamed), status != 200 {
        // NIO's decoder refuses a head it cannot read (a target too long) with a bare 400.
        if !(status == 400 && text(streamed).lowercased().contains("content-length: 0")) {
            checkResponse(streamed, "GET /sse?connect", allowed: [400])
        }
    } else {
        check(statusCode(streamed) == 200, "GET /sse?connect gave no response: \(text(streamed))")
    }
    // Publications after all that reach the streams (and the recovery they asked for).
    seedHistory(node)
    node.advance(seconds: 1)
    _ = node.read(stream)
    _ = node.read(resumed)
}

/// Publications in `a`, `b` and `chat:lobby`, so that positions and ranges read real entries.
func seedHistory(_ node: HTTPNode) {
    for channel in ["a", "b", "chat:lobby"] {
        for n in 0..<3 {
            _ = node.broker.publish(PublishRequest(
                channel: channel, data: ByteBuffer(string: "{\"n\":\(n)}"), historySize: 100, historyTTL: 300))
        }
    }
    node.loop.run()
}

func exchange(_ node: HTTPNode, _ bytes: [UInt8]) -> [UInt8] {
    let connection = node.open()
    node.send(connection, bytes)
    return node.read(connection)
}

func request(_ method: String, _ target: String, headers: [(String, String)] = [], body: [UInt8] = []) -> [UInt8] {
    var head = "\(method) \(target) HTTP/1.1\r\nHost: fuzz\r\n"
    for (name, value) in headers { head += "\(name): \(value)\r\n" }
    if method == "POST" { head += "Content-Length: \(body.count)\r\nContent-Type: application/json\r\n" }
    head += "\r\n"
    return Array(head.utf8) + body
}

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes.prefix(2000), as: UTF8.self).debugDescription }

func statusCode(_ response: [UInt8]) -> Int? {
    let prefix = Array("HTTP/1.1 ".utf8)
    guard response.count >= prefix.count + 3, response.starts(with: prefix) else { return nil }
    return Int(String(decoding: response[prefix.count..<(prefix.count + 3)], as: UTF8.self))
}

/// One complete response: an allowed status, a Content-Length that matches, a JSON body.
func checkResponse(_ response: [UInt8], _ what: String, allowed: Set<Int>) {
    guard let status = statusCode(response) else { fatalError("\(what): no HTTP response: \(text(response))") }
    check(allowed.contains(status), "\(what): status \(status) not documented: \(text(response))")
    let separator = Array("\r\n\r\n".utf8)
    guard let end = firstRange(of: separator, in: response) else { fatalError("\(what): unterminated head: \(text(response))") }
    let head = String(decoding: response[..<end], as: UTF8.self).lowercased()
    let body = response[(end + separator.count)...]
    guard let lengthLine = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
        let length = Int(String(lengthLine.dropFirst("content-length:".count).filter { $0 != " " }))
    else { fatalError("\(what): no Content-Length: \(text(response))") }
    check(length == body.count, "\(what): Content-Length \(length) but \(body.count) body bytes")
    check(body.count <= 1_048_576 + 4096, "\(what): answer of \(body.count) bytes is past the outbound limit")
    check(head.contains("content-type: application/json"), "\(what): not JSON: \(text(response))")
    check((try? parser.parse(Array(body))) != nil, "\(what): body is not JSON: \(text(response))")
}

let parser = JSONParser(maximumDepth: 64, maximumValues: 1_000_000)

func firstRange(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
    guard haystack.count >= needle.count else { return nil }
    for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
        if haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
    }
    return nil
}

/// The `session` of the connect reply in an SSE stream (`"session":"<id>"`).
func sessionID(in bytes: [UInt8]) -> String? {
    let key = Array("\"session\":\"".utf8)
    guard let at = firstRange(of: key, in: bytes) else { return nil }
    let start = at + key.count
    guard let end = bytes[start...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
    return String(decoding: bytes[start..<end], as: UTF8.self)
}

/// Percent-encodes every byte but the unreserved ones (RFC 3986).
func percentEncode(_ bytes: [UInt8]) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var out: [UInt8] = []
    for byte in bytes {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            out.append(byte)
        default:
            out.append(contentsOf: [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
        }
    }
    return String(decoding: out, as: UTF8.self)
}
