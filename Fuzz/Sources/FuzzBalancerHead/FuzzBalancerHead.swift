import NIOCore
import SwitchboardBalancer
import SwitchboardCore

/// What `switchboard balance` and a node read before anything else on a connection: the balancer's
/// request head parser (fed whole and in pieces), the head it forwards to the node, the routing
/// fields it reads from a head (hash keys, the unverified `sub`), the PROXY protocol v2 header a node
/// reads from a trusted proxy, and the `Origin` check.
///
/// The first byte picks how the rest is cut into reads; the rest is the bytes a client sends.
///
/// Checked beyond "no crash":
/// - the parser gives the same answer whether the bytes arrive at once or in pieces;
/// - a head it accepts is within its caps, and the head forwarded to the node parses back with the
///   same request line, every header but the stripped ones in order, none of the client's
///   `X-Forwarded-For`/`-Proto`/`Forwarded`, exactly the balancer's own, and `Connection: close` on
///   anything that is not an upgrade (what keeps a client from smuggling a second request or another
///   address past the balancer);
/// - a PROXY header decodes the same from every longer buffer, every shorter prefix asks for more
///   bytes (a node reading it in pieces never refuses a good header), and what decodes writes and
///   decodes back to itself;
/// - an origin admitted by `https://*.example.com` is a proper subdomain of it on that scheme.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    guard let cutSeed = bytes.first else { return 0 }
    let input = Array(bytes.dropFirst())
    checkRequestHead(input, cutSeed: cutSeed)
    checkProxyHeader(input)
    checkOrigin(input)
    return 0
}

func checkRequestHead(_ input: [UInt8], cutSeed: UInt8) {
    var whole = RequestHeadParser()
    let atOnce = whole.parse(ByteBuffer(bytes: input))

    var pieces = RequestHeadParser()
    var received = ByteBuffer()
    var state = UInt32(cutSeed) | 0x100
    var offset = 0
    var inPieces = RequestHeadParser.Outcome.needMore
    while offset < input.count {
        state = state &* 1_103_515_245 &+ 12_345
        let size = min(Int(state >> 16) % 64 + 1, input.count - offset)
        received.writeBytes(input[offset..<(offset + size)])
        offset += size
        inPieces = pieces.parse(received)
        if case .needMore = inPieces { continue }
        break
    }
    // Once it has answered, the parser keeps its answer.
    if case .invalid(let first) = inPieces, case .invalid(let again) = pieces.parse(received), first != again {
        fatalError("a refused head changed its reason: \(first) then \(again)")
    }
    switch (atOnce, inPieces) {
    case (.needMore, .needMore):
        guard input.count < RequestHeadParser.maximumBytes else { fatalError("\(input.count) bytes and still no head") }
    case (.invalid(let a), .invalid(let b)):
        guard a == b else { fatalError("whole: \(a), in pieces: \(b)") }
    case (.complete(let a), .complete(let b)):
        guard a == b else { fatalError("whole and in pieces parsed different heads") }
        checkHead(a, input: input)
    default:
        fatalError("whole: \(atOnce), in pieces: \(inPieces)")
    }
}

let stripped: Set<String> = ["x-forwarded-for", "x-forwarded-proto", "forwarded"]

func checkHead(_ head: RequestHead, input: [UInt8]) {
    guard head.length <= RequestHeadParser.maximumBytes, head.length <= input.count,
        head.headers.count < RequestHeadParser.maximumLines
    else { fatalError("a head over the caps: \(head.length) bytes, \(head.headers.count) headers") }
    guard input[head.length - 4..<head.length].elementsEqual("\r\n\r\n".utf8) else { fatalError("the head does not end at its blank line") }

    // What routing reads from a head: bounded, and never a crash.
    for source in HashKeySource.allCases {
        if let key = head.hashKey(source, clientAddress: "127.0.0.2"), key.isEmpty || key.utf8.count > 4 * RequestHead.maximumKeyLength {
            fatalError("hash key of \(key.utf8.count) bytes from \(source)")
        }
    }
    if let subject = head.unverifiedSubject, subject.isEmpty { fatalError("an empty unverified sub") }
    _ = head.bearerToken
    _ = head.path

    for addForwarded in [true, false] {
        var out = ByteBuffer()
        head.forwardedHead(clientAddress: "127.0.0.2", proto: "http", addForwardedHeaders: addForwarded, into: &out)
        var parser = RequestHeadParser()
        guard case .complete(let forwarded) = parser.parse(out) else {
            // The additions can push a head at the caps over them; the node then refuses it as too large.
            if head.length + 80 >= RequestHeadParser.maximumBytes || head.headers.count + 4 >= RequestHeadParser.maximumLines { continue }
            fatalError("the forwarded head does not parse: \(parser.parse(out))")
        }
        guard forwarded.length == out.readableBytes else { fatalError("bytes after the forwarded head") }
        guard forwarded.requestLine == head.requestLine else { fatalError("the request line changed") }
        let kept = head.headers.filter {
            !stripped.contains($0.lowercasedName) && (head.isUpgrade || ($0.lowercasedName != "connection" && $0.lowercasedName != "keep-alive"))
        }
        guard forwarded.headers.prefix(kept.count).map(\.rawLine) == kept.map(\.rawLine) else { fatalError("headers changed or reordered") }
        var added = Array(forwarded.headers.dropFirst(kept.count).map { "\($0.lowercasedName): \($0.value)" })
        if !head.isUpgrade {
            guard added.first == "connection: close" else { fatalError("no Connection: close on a plain request: \(added)") }
            added.removeFirst()
        }
        let expected = addForwarded ? ["x-forwarded-for: 127.0.0.2", "x-forwarded-proto: http"] : []
        guard added == expected else { fatalError("added headers \(added), expected \(expected)") }
        guard forwarded.isUpgrade == head.isUpgrade else { fatalError("the upgrade changed") }
    }
}

func checkProxyHeader(_ input: [UInt8]) {
    let buffer = ByteBuffer(bytes: input)
    let decoded = ProxyProtocolHeader.decode(buffer.readableBytesView)
    let lax = ProxyProtocolHeader.decode(buffer.readableBytesView, maximumLength: 16 + 65_535)
    switch decoded {
    case .header(let header, let length):
        guard length >= 16, length <= ProxyProtocolHeader.maximumLength, length <= input.count else { fatalError("header length \(length)") }
        guard lax == decoded else { fatalError("the cap changed a header within it") }
        for cut in 0..<length {
            switch ProxyProtocolHeader.decode(ByteBuffer(bytes: input[..<cut]).readableBytesView) {
            case .needMoreBytes: continue
            case let other: fatalError("a prefix of \(cut) of a \(length)-byte header decoded as \(other)")
            }
        }
        // Bytes after the header do not change it.
        let longer = ByteBuffer(bytes: Array(input[..<length]) + [0x47, 0x45, 0x54])
        guard ProxyProtocolHeader.decode(longer.readableBytesView) == decoded else { fatalError("trailing bytes changed the header") }
        var written = ByteBuffer()
        header.write(into: &written)
        guard case .header(let again, let writtenLength) = ProxyProtocolHeader.decode(written.readableBytesView),
            writtenLength == written.readableBytes
        else { fatalError("a written header does not decode") }
        if header.sourceAddress != nil, header.destinationAddress != nil, !header.isLocal {
            var expected = header
            if !header.clientUsedTLS || (header.tlsVersion?.utf8.count ?? 0) > 255 { expected.tlsVersion = nil }
            guard again == expected else { fatalError("\(header) wrote and read back as \(again)") }
        } else {
            guard again.isLocal || again.sourceAddress == nil else { fatalError("an address appeared: \(again)") }
        }
    case .needMoreBytes:
        guard input.count < 16 + 65_535 else { fatalError("more bytes wanted after \(input.count)") }
    case .notProxyProtocol:
        guard !input.prefix(ProxyProtocolHeader.signature.count).elementsEqual(ProxyProtocolHeader.signature.prefix(min(12, input.count))) else {
            fatalError("the signature was not recognised")
        }
    case .invalid:
        break
    }
}

let wildcard = OriginPolicy(["https://*.example.com"])
let sameHost = OriginPolicy([])

func checkOrigin(_ input: [UInt8]) {
    let split = input.firstIndex(of: 0) ?? input.endIndex
    let origin = String(decoding: input[..<split], as: UTF8.self)
    let host = split < input.endIndex ? String(decoding: input[(split + 1)...], as: UTF8.self) : nil
    _ = sameHost.admits(origin: origin, host: host)
    if wildcard.admits(origin: origin, host: host) {
        let lowered = origin.lowercased()
        // `wss` is the same scheme as `https` to the policy.
        guard let scheme = ["https://", "wss://"].first(where: { lowered.hasPrefix($0) }) else {
            fatalError("\(origin) admitted on another scheme")
        }
        var authority = lowered.dropFirst(scheme.count)
        if let colon = authority.lastIndex(of: ":"), Int(authority[authority.index(after: colon)...]) == 443 {
            authority = authority[..<colon]
        }
        // Compared as bytes, as the browser sent them.
        let suffix = Array(".example.com".utf8)
        guard authority.utf8.count > suffix.count, authority.utf8.suffix(suffix.count).elementsEqual(suffix),
            !authority.contains("/"), !authority.contains("@")
        else { fatalError("\(origin) admitted as a subdomain of example.com") }
    }
}
