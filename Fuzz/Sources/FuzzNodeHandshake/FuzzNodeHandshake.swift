import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import SwitchboardServer
import SwitchboardServerTesting

/// The first bytes of a connection to a node, as a running node accepts it: `HandshakeRouter`,
/// which answers a plain `/ws` handshake straight from the request bytes with its own parser (every
/// WebSocket client takes that path), and hands anything else to NIO's HTTP pipeline, the upgrader
/// and `HTTPHandler`; bytes after the head go on to the WebSocket session or the next request.
///
/// The first input byte picks how the rest is cut into reads, and (its top bit) whether the
/// connection comes from a trusted proxy: then the node's `ProxyProtocolHandler` reads a PROXY v2
/// header or the first head's `X-Forwarded-For` first, as for a `--trusted-proxy` address, and the
/// checks below apply to the bytes after a PROXY header. Each input gets a fresh node on the
/// memory broker. Checked beyond "no crash, no leak":
/// - whatever the node writes first is an HTTP/1.1 (or, to an HTTP/1.0 request, 1.0) status line with
///   a three-digit status;
/// - a `101` carries the `Sec-WebSocket-Accept` of the one `Sec-WebSocket-Key` of the head, and when
///   NIO's HTTP/1.1 parser reads the same head it sees a `GET` of `/ws` (or `/ws?…`) over HTTP/1.1
///   with that one key and no body: the router's shortcut never answers a head the HTTP path would
///   read as another request or with another key. (Heads NIO refuses outright, such as control bytes
///   in the query, the shortcut may still answer: nothing of the head but the key is used there.)
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    guard let cutSeed = bytes.first else { return 0 }
    let input = Array(bytes.dropFirst())
    let viaProxy = cutSeed & 0x80 != 0
    let node = try! EmbeddedNode(configuration: viaProxy ? proxyConfiguration : ServerConfiguration())
    let channel = try! viaProxy ? node.openFromTrustedProxy() : node.openAccepted()
    var state = UInt32(cutSeed) | 0x100
    var offset = 0
    while offset < input.count, channel.isActive {
        state = state &* 1_103_515_245 &+ 12_345
        let size = min(Int(state >> 16) % 256 + 1, input.count - offset)
        do {
            try channel.writeInbound(ByteBuffer(bytes: input[offset..<(offset + size)]))
        } catch {
            break
        }
        offset += size
        node.loop.run()
    }
    let output = channel.readAllOutbound()
    check(output: output, input: viaProxy ? afterProxyHeader(input) : input)
    _ = try? channel.finish()
    node.loop.run()
    node.shutdown()
    return 0
}

/// A node that trusts the connections' address (127.0.0.1) as a proxy.
let proxyConfiguration: ServerConfiguration = {
    var configuration = ServerConfiguration()
    configuration.trustedProxies = ["127.0.0.1"]
    return configuration
}()

/// The bytes after a PROXY v2 header, if the input starts with a complete one (the reference:
/// signature, then the length in bytes 14-15); the input otherwise.
func afterProxyHeader(_ input: [UInt8]) -> [UInt8] {
    let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    guard input.count >= 16, input.starts(with: signature) else { return input }
    let length = 16 + Int(input[14]) << 8 + Int(input[15])
    return input.count >= length ? Array(input[length...]) : []
}

func check(output: [UInt8], input: [UInt8]) {
    guard !output.isEmpty else { return }
    let statusLine = Array(output.prefix(13))
    // HTTP/1.0 requests are answered in their version.
    guard statusLine.count == 13, statusLine.starts(with: "HTTP/1.1 ".utf8) || statusLine.starts(with: "HTTP/1.0 ".utf8),
        statusLine[9...11].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), statusLine[12] == UInt8(ascii: " ")
    else { fatalError("the node's first bytes are not a status line: \(String(decoding: output.prefix(64), as: UTF8.self))") }
    guard statusLine[9...11].elementsEqual("101".utf8) else { return }
    guard statusLine.starts(with: "HTTP/1.1 ".utf8) else { fatalError("a 101 in HTTP/1.0") }

    // A 101: find the accept value and the head it answered.
    let response = String(decoding: output.prefix(512), as: UTF8.self)
    guard let acceptLine = response.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("sec-websocket-accept:") }) else {
        fatalError("a 101 without Sec-WebSocket-Accept")
    }
    let accept = acceptLine.dropFirst("sec-websocket-accept:".count).trimmingCharacters(in: .whitespaces)
    guard let headEnd = findHeadEnd(input) else { fatalError("a 101 before the head was complete") }
    let head = Array(input[..<headEnd])

    let decoder = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
    defer { _ = try? decoder.finish() }
    guard (try? decoder.writeInbound(ByteBuffer(bytes: head))) != nil else { return }  // NIO refuses the head
    guard case .head(let request)? = try? decoder.readInbound(as: HTTPServerRequestPart.self) else { return }
    guard request.method == .GET, request.uri == "/ws" || request.uri.hasPrefix("/ws?"), request.version == .http1_1 else {
        fatalError("101 to a head NIO reads as \(request.method) \(request.uri) \(request.version)")
    }
    let keys = request.headers["sec-websocket-key"]
    guard keys.count == 1, let rawKey = keys.first else { fatalError("101 to a head with \(keys.count) keys as NIO reads it") }
    // NIO keeps a field value's trailing whitespace; it is not part of the value (RFC 9110 5.5).
    let key = rawKey.trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
    guard accept == expectedAccept(key) else { fatalError("101 with the accept value of another key than NIO's \(key)") }
    if case .body? = try? decoder.readInbound(as: HTTPServerRequestPart.self) { fatalError("101 to a head with a body") }
}

func findHeadEnd(_ bytes: [UInt8]) -> Int? {
    guard bytes.count >= 4 else { return nil }
    for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
        return i + 4
    }
    return nil
}

/// RFC 6455: base64 of the SHA-1 of the key and the GUID. SHA-1 is written out here so that the
/// check does not reuse the server's code.
func expectedAccept(_ key: String) -> String {
    let digest = sha1(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))
    return Data(digest).base64EncodedString()
}

func sha1(_ message: [UInt8]) -> [UInt8] {
    var h: [UInt32] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0]
    var data = message
    let bitLength = UInt64(message.count) &* 8
    data.append(0x80)
    while data.count % 64 != 56 { data.append(0) }
    for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
    for chunk in stride(from: 0, to: data.count, by: 64) {
        var w = [UInt32](repeating: 0, count: 80)
        for i in 0..<16 {
            w[i] = UInt32(data[chunk + 4 * i]) << 24 | UInt32(data[chunk + 4 * i + 1]) << 16 | UInt32(data[chunk + 4 * i + 2]) << 8
                | UInt32(data[chunk + 4 * i + 3])
        }
        for i in 16..<80 {
            let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
            w[i] = x << 1 | x >> 31
        }
        var (a, b, c, d, e) = (h[0], h[1], h[2], h[3], h[4])
        for i in 0..<80 {
            let (f, k): (UInt32, UInt32)
            switch i {
            case 0..<20: (f, k) = ((b & c) | (~b & d), 0x5A82_7999)
            case 20..<40: (f, k) = (b ^ c ^ d, 0x6ED9_EBA1)
            case 40..<60: (f, k) = ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC)
            default: (f, k) = (b ^ c ^ d, 0xCA62_C1D6)
            }
            let temp = (a << 5 | a >> 27) &+ f &+ e &+ k &+ w[i]
            (e, d, c, b, a) = (d, c, b << 30 | b >> 2, a, temp)
        }
        h[0] = h[0] &+ a
        h[1] = h[1] &+ b
        h[2] = h[2] &+ c
        h[3] = h[3] &+ d
        h[4] = h[4] &+ e
    }
    return h.flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (24 - 8 * UInt32($0))) } }
}
