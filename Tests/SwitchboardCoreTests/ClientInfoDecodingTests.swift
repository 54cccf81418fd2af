import NIOCore
import Testing

@testable import SwitchboardCore

@Suite("ClientInfo decoding: the plain shape read without a tree, everything else by the parser")
struct ClientInfoDecodingTests {
    static let parser = JSONParser(maximumDepth: 32, maximumValues: 100_000)

    static let inputs: [String] = [
        #"{"client":"c1","user":"alice"}"#,
        #"{"client":"c1","user":""}"#,
        #"{"client":"","user":""}"#,
        #"{"client":"0b6c3e2a-9f1d-4c5e-8a7b-123456789abc","user":"user with spaces ~!@#$%^&*()"}"#,
        #"{"client":"c1","user":"a\"b"}"#,
        #"{"client":"c1","user":"a\\b"}"#,
        #"{"client":"c1","user":"\u0041"}"#,
        #"{"client":"c1","user":"clé"}"#,
        #"{"client":"c1","user":"alice","info":{"name":"Alice"}}"#,
        #"{"client":"c1","user":"alice","meta":[1,2]}"#,
        #"{ "client":"c1","user":"alice"}"#,
        #"{"client":"c1", "user":"alice"}"#,
        #"{"client":"c1","user":"alice"} "#,
        #"{"client":"c1","user":"alice"}x"#,
        #"{"user":"alice","client":"c1"}"#,
        #"{"client":"c1"}"#,
        #"{"client":"c1","user":"alice""#,
        #"{"client":"c1","user":"alice"#,
        #"{"client":"c1","user":7}"#,
        #"{"client":"c1","user":"alice","client":"c2"}"#,
        "{\"client\":\"c1\",\"user\":\"tab\there\"}",
        "{\"client\":\"c1\",\"user\":\"del\u{7F}\"}",
        "",
        "{",
        #"{"client":""#,
    ]

    @Test("the plain reading, where it answers, equals the parser's", arguments: Self.inputs)
    func sameAsParser(_ input: String) {
        let bytes = ByteBuffer(string: input)
        let general = ClientInfo.decodeJSON(bytes, parser: Self.parser)
        if let plain = bytes.withUnsafeReadableBytes({ ClientInfo.plain($0) }) {
            #expect(plain == general)
        }
        #expect(ClientInfo.decode(bytes, parser: Self.parser) == general)
    }

    @Test("what writeClientInfo writes for a client without info or meta takes the plain reading")
    func writerOutputIsPlain() {
        for info in [ClientInfo(client: "c1", user: ""), ClientInfo(client: "0b6c3e2a-9f1d", user: "alice@example.com")] {
            var bytes = ByteBuffer()
            bytes.writeClientInfo(info)
            #expect(bytes.withUnsafeReadableBytes { ClientInfo.plain($0) } == info)
        }
        var withInfo = ByteBuffer()
        withInfo.writeClientInfo(ClientInfo(client: "c1", user: "u", info: .string("x")))
        #expect(withInfo.withUnsafeReadableBytes { ClientInfo.plain($0) } == nil)
        #expect(ClientInfo.decode(withInfo, parser: Self.parser) == ClientInfo(client: "c1", user: "u", info: .string("x")))
    }

    @Test("the plain reading refuses what it cannot read as the parser would")
    func refusals() {
        for input in [#"{"client":"c1","user":"a\"b"}"#, #"{"client":"c1","user":"clé"}"#, #"{"client":"c1","user":"alice"} "#,
                      #"{"user":"alice","client":"c1"}"#, "{\"client\":\"c1\",\"user\":\"tab\there\"}"] {
            #expect(ByteBuffer(string: input).withUnsafeReadableBytes { ClientInfo.plain($0) } == nil, "\(input)")
        }
    }

    @Test("the plain reading agrees with the parser on 20,000 generated near-plain inputs")
    func generated() {
        // Deterministic: a fixed-seed generator, so a failure names an input that fails again.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        let pieces: [[UInt8]] = ["a", "Z", "0", " ", "\"", "\\", "\\\"", "\\u0041", "é", "\u{7F}", "\t", "\n", "{", "}", ":", ","].map { Array($0.utf8) }
        var plainHits = 0
        for _ in 0..<20_000 {
            var bytes = Array(#"{"client":""#.utf8)
            for _ in 0..<next(4) { bytes += pieces[next(pieces.count)] }
            bytes += Array(#"","user":""#.utf8)
            for _ in 0..<next(4) { bytes += pieces[next(pieces.count)] }
            bytes += Array(#""}"#.utf8)
            // Now and then damage it: drop, double or change a byte.
            if next(4) == 0, !bytes.isEmpty {
                let at = next(bytes.count)
                switch next(3) {
                case 0: bytes.remove(at: at)
                case 1: bytes.insert(bytes[at], at: at)
                default: bytes[at] = UInt8(truncatingIfNeeded: next(256))
                }
            }
            let buffer = ByteBuffer(bytes: bytes)
            let general = ClientInfo.decodeJSON(buffer, parser: Self.parser)
            if let plain = buffer.withUnsafeReadableBytes({ ClientInfo.plain($0) }) {
                plainHits += 1
                #expect(plain == general, "\(String(decoding: bytes, as: UTF8.self))")
            }
        }
        // The generator reaches the plain path often enough for the comparison to mean something.
        #expect(plainHits > 2_000)
    }
}
