import SwitchboardCore
@_spi(Harness) import SwitchboardServer

/// The parsers of the SSE and long-polling transports on arbitrary bytes, each input fed to all of
/// them: `Last-Event-ID` (`ResumeID`, `Base64URL`), the SSE session id, the request query and
/// HTTP command bodies (SSE POST, `/rpc`). None may crash, and each must keep its invariants:
/// round trips, the canonical form of what it accepts, and agreement with a byte-level reference.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    // Header values and request targets reach these parsers as Strings made by NIO's HTTP decoder.
    let text = String(decoding: bytes, as: UTF8.self)
    checkBase64URL(bytes, text)
    checkResumeID(text)
    checkSessionID(text)
    checkQuery(text)
    checkCommands(bytes)
    return 0
}

/// `precondition` that prints its message in release builds too (the report names the broken invariant).
func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError(message()) }
}

func same(_ a: some StringProtocol, _ b: some StringProtocol) -> Bool {
    // Byte equality: String's `==` is Unicode canonical equivalence, too lax for protocol text.
    a.utf8.elementsEqual(b.utf8)
}

func checkBase64URL(_ bytes: [UInt8], _ text: String) {
    let encoded = Base64URL.encode(bytes)
    check(!encoded.utf8.contains { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "=") }, "not base64url: \(encoded)")
    check(Base64URL.decode(Substring(encoded)) == bytes, "base64url round trip failed for \(bytes)")
    if let decoded = Base64URL.decode(Substring(text)) {
        check(Base64URL.decode(Substring(Base64URL.encode(decoded))) == decoded, "base64url re-encoding changed \(text)")
    }
}

func checkResumeID(_ text: String) {
    guard let subs = try? ResumeID.decode(Substring(text)) else { return }
    // What the id names came from JSON, which must have been UTF-8 (JSONParser's precondition).
    if let json = Base64URL.decode(Substring(text)) {
        check(UTF8Validation.isValid(json), "Last-Event-ID accepted with JSON that is not UTF-8: \(text)")
    }
    let again = ResumeID.encode(subs.map { (channel: $0.channel, position: $0.since) })
    guard let back = try? ResumeID.decode(Substring(again)) else {
        fatalError("ResumeID.encode made an id its decode refuses: \(again) (from \(text))")
    }
    check(
        back.count == subs.count && zip(back, subs).allSatisfy { same($0.channel, $1.channel) && $0.since == $1.since },
        "ResumeID round trip changed \(text) into \(again)")
}

func isLowerHex(_ byte: UInt8) -> Bool {
    (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
}

func checkSessionID(_ text: String) {
    guard let id = NodeHarness.parseSessionID(Substring(text)) else { return }
    // `<node>-<loop>-<n>.<secret>`, as LoopFanout and ClientSession make them, byte for byte.
    check(same("\(id.client).\(id.secret)", text), "session id parts do not make up \(text)")
    check(id.secret.utf8.count == 32 && id.secret.utf8.allSatisfy(isLowerHex), "bad secret in \(text)")
    let parts = id.client.utf8.split(separator: UInt8(ascii: "-"), omittingEmptySubsequences: false)
    check(parts.count == 3, "client id \(id.client) is not <node>-<loop>-<n>")
    check(parts[0].elementsEqual(id.node.utf8) && !id.node.isEmpty && !parts[2].isEmpty, "node or number wrong in \(text)")
    check(id.loop >= 0 && parts[1].elementsEqual(String(id.loop).utf8), "loop \(String(decoding: parts[1], as: UTF8.self)) accepted as \(id.loop) in \(text)")
}

/// Percent-encodes every byte but the unreserved ones (RFC 3986).
func percentEncode(_ text: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var out: [UInt8] = []
    for byte in text.utf8 {
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

/// What `HTTPQuery` documents, on bytes: the query is what follows the first `?`; pairs split at
/// `&`, name and value at the first `=`; `+` is a space, `%XX` a byte; the first of a name wins;
/// a pair whose name or value is malformed (bad escape, not UTF-8) is skipped.
func referenceQuery(_ uri: String) -> [String: String] {
    func decode(_ part: ArraySlice<UInt8>) -> String? {
        var bytes: [UInt8] = []
        var i = part.startIndex
        while i < part.endIndex {
            let b = part[i]
            if b == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if b == UInt8(ascii: "%") {
                guard i + 2 < part.endIndex, let high = hexValue(part[i + 1]), let low = hexValue(part[i + 2])
                else { return nil }
                bytes.append(high << 4 | low)
                i += 2
            } else {
                bytes.append(b)
            }
            i += 1
        }
        return String(validating: bytes, as: UTF8.self)
    }
    let utf8 = Array(uri.utf8)
    guard let mark = utf8.firstIndex(of: UInt8(ascii: "?")) else { return [:] }
    var values: [String: String] = [:]
    for pair in utf8[(mark + 1)...].split(separator: UInt8(ascii: "&")) {
        let name: ArraySlice<UInt8>
        let value: ArraySlice<UInt8>
        if let eq = pair.firstIndex(of: UInt8(ascii: "=")) {
            name = pair[..<eq]
            value = pair[(eq + 1)...]
        } else {
            name = pair
            value = []
        }
        guard let n = decode(name), let v = decode(value) else { continue }
        if values[n] == nil { values[n] = v }
    }
    return values
}

func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
}

func sameQuery(_ a: [String: String], _ b: [String: String]) -> Bool {
    func bytes(_ q: [String: String]) -> [[UInt8]: [UInt8]] {
        Dictionary(q.map { (Array($0.key.utf8), Array($0.value.utf8)) }, uniquingKeysWith: { first, _ in first })
    }
    return a.count == b.count && bytes(a) == bytes(b)
}

func checkQuery(_ text: String) {
    // Any text, percent-encoded, decodes back to itself, alone and as a query parameter.
    let encoded = percentEncode(text)
    guard let decoded = NodeHarness.decodeQueryComponent(Substring(encoded)), same(decoded, text) else {
        fatalError("HTTPQuery.decode(\(encoded)) is not \(text)")
    }
    let query = NodeHarness.parseQuery(uri: "/sse?connect=\(encoded)&session=s&connect=second")
    check(query["connect"].map { same($0, text) } == true && query["session"] == "s", "query parameter lost: \(encoded)")
    // The input as a request target (and as a query), against the byte-level reference.
    for uri in [text, "/sse?" + text] {
        let parsed = NodeHarness.parseQuery(uri: uri)
        let reference = referenceQuery(uri)
        check(sameQuery(parsed, reference), "HTTPQuery(uri: \(uri.debugDescription)) = \(parsed), bytes say \(reference)")
    }
}

func isConnect(_ message: ClientMessage) -> Bool {
    if case .command(let command) = message, case .connect = command.method { return true }
    return false
}

func checkCommands(_ body: [UInt8]) {
    let post = NodeHarness.parseCommands(body, allowConnect: false)  // SSE POST
    let rpc = NodeHarness.parseCommands(body, allowConnect: true)  // /rpc
    if let post {
        check(!post.isEmpty, "an empty body was accepted")
        check(!post.contains(where: isConnect), "connect accepted in an SSE POST")
        check(rpc == post, "allowConnect changed commands that have no connect")
    } else if let rpc {
        check(rpc.contains(where: isConnect), "SSE POST refused a body /rpc accepts, without a connect in it")
    }
}
