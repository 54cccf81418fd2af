import Foundation
import NIOCore
import SwitchboardCore
import Testing

@Suite("SSE resume ids")
struct ResumeIDTests {
    @Test("an id names every subscription's position and reads back the same")
    func roundTrip() throws {
        let id = try #require(ResumeID.encode([
            ("chat:lobby", StreamPosition(offset: 42, epoch: "abc")),
            ("news", nil),
            ("salle:café \"1\"", StreamPosition(offset: 0, epoch: "e")),
        ]))
        #expect(!id.contains("=") && !id.contains("+") && !id.contains("/") && !id.contains("\n"))
        let subs = try ResumeID.decode(Substring(id))
        #expect(subs.map(\.channel) == ["chat:lobby", "news", "salle:café \"1\""])
        #expect(subs.map(\.since) == [StreamPosition(offset: 42, epoch: "abc"), nil, StreamPosition(offset: 0, epoch: "e")])
    }

    @Test("an id fits one header field: past 4,096 bytes of JSON none is made, just under it one is (5.5 KB of text at most)")
    func bounded() throws {
        // 255-byte names with quotes, escaped to 2 bytes each: the id would grow by about 500 bytes a channel.
        let long = (0..<128).map { ("q\($0):" + String(repeating: "\"", count: 250), Optional(StreamPosition(offset: StreamPosition.maximumOffset, epoch: "e"))) }
        #expect(ResumeID.encode(long) == nil)
        #expect(ResumeID.encode(Array(long.prefix(8))) == nil)  // 4,393 bytes of JSON
        let fits = try #require(ResumeID.encode(Array(long.prefix(7))))  // 3,844
        #expect(fits.utf8.count > 5_000 && fits.utf8.count <= 5_462)
        #expect(try ResumeID.decode(Substring(fits)).count == 7)
        // Nothing is written into the event when the id is not made.
        var event = ByteBuffer(string: "id: ")
        var scratch = ByteBuffer()
        #expect(!ResumeID.write(long, into: &event, scratch: &scratch))
        #expect(String(buffer: event) == "id: ")
    }

    @Test("an id that is not base64url, not JSON, or not a subs object is refused", arguments: [
        "not base64!", Base64URL.encode(Array("[1,2]".utf8)), Base64URL.encode(Array("{\"a\":{\"offset\":-1,\"epoch\":\"x\"}}".utf8)),
        Base64URL.encode(Array("{\"a\":".utf8)), "a+b/",
    ])
    func refused(_ text: String) {
        #expect(throws: SwitchboardError.self) { try ResumeID.decode(Substring(text)) }
    }

    @Test("base64url round-trips every byte value, with or without padding")
    func base64() {
        let bytes = (0...255).map { UInt8($0) }
        let text = Base64URL.encode(bytes)
        #expect(Base64URL.decode(Substring(text)) == bytes)
        #expect(Base64URL.decode("YQ==") == [0x61])
        #expect(Base64URL.decode("YQ") == [0x61])
    }
}

@Suite("Base64URL")
struct Base64URLTests {
    @Test("every length round-trips, padded or not")
    func roundTrip() {
        for length in 0..<70 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let text = Base64URL.encode(bytes)
            #expect(Base64URL.decode(Substring(text)) == bytes)
            let padded = text + String(repeating: "=", count: (4 - text.utf8.count % 4) % 4)
            #expect(Base64URL.decode(Substring(padded)) == bytes)
        }
    }

    @Test("encoding is standard base64 in the URL alphabet without padding, for every length")
    func matchesFoundation() {
        for length in 0..<200 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 151 &+ length) }
            let expected = Data(bytes).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(Base64URL.encode(bytes) == expected, "\(length)")
        }
    }

    @Test("not base64url", arguments: ["a+b/", "ab c", "A", "AB=", "AB===", "QQ=x", "QR", "QUF=", "é"])
    func refused(_ text: String) {
        #expect(Base64URL.decode(Substring(text)) == nil)
    }
}
