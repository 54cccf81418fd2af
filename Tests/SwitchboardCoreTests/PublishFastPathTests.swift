import SwitchboardCore
import Testing

/// `ClientMessage.parsePublish` must give exactly what the general path gives (`parseSequence`,
/// then `ClientMessage.parse`) whenever it answers, and answer for the frames clients send.
@Suite("Publish fast path")
struct PublishFastPathTests {
    static let parser = ClientMessage.parser(maximumDepth: 64, maximumValues: 50_000)

    static func fast(_ text: String) -> ClientMessage? {
        Array(text.utf8).withUnsafeBufferPointer { ClientMessage.parsePublish($0, parser: Self.parser) }
    }

    /// What the session does without the fast path: nil when the frame is malformed or not one command.
    static func general(_ text: String) -> ClientMessage? {
        guard let values = try? Self.parser.parseSequence(Array(text.utf8)), values.count == 1 else { return nil }
        return try? ClientMessage.parse(values[0])
    }

    static let plainPublishes = [
        #"{"id":1,"publish":{"channel":"chat","data":{"text":"hi"}}}"#,
        #"{"id":4294967295,"publish":{"data":[1,2,{"a":null}],"channel":"room:1"}}"#,
        " {\t\"id\" : 7 ,\r\n \"publish\" : { \"channel\" : \"a\" , \"data\" : \"x\\ny\" } } \n",
        #"{"id":2,"publish":{"channel":"héllo","data":1e400}}"#,
        #"{"id":3,"publish":{"channel":"c","data":"\u00e9\""}}"#,
        #"{"id":10,"publish":{"channel":"c","data":-0.5E+3}}"#,
    ]

    @Test("takes the usual publish frames, with the general path's answer", arguments: Self.plainPublishes)
    func taken(_ text: String) throws {
        let fast = try #require(Self.fast(text))
        #expect(fast == Self.general(text))
        guard case .command(let command) = fast, case .publish(let params) = command.method else {
            Issue.record("not a publish: \(fast)")
            return
        }
        #expect(command.id > 0)
        #expect(!params.channel.isEmpty && params.idempotencyKey == nil)
    }

    static let otherFrames = [
        // Malformed, or a trap for a scanner that takes a key before checking its colon.
        #"{"id":1,"publish":{"channel""data":1}}"#,
        #"{"id":1,"publish":{"channel":"c","data":}}"#,
        #"{"id":1,"publish":{"channel":"c","data":1,}}"#,
        #"{"id":1,"publish":{"channel":"c","data":1}"#,
        #"{"id":1,"publish":{"channel":"c","data":1}} x"#,
        #"{"id":1,"publish":{"channel":"c","data":01}}"#,
        #"{"id":1,"publish":{"channel":"c","data":[1,2}}}"#,
        // Valid, but not the plain shape: ids the general path reads otherwise or refuses.
        #"{"id":0,"publish":{"channel":"c","data":1}}"#,
        #"{"id":01,"publish":{"channel":"c","data":1}}"#,
        #"{"id":4294967296,"publish":{"channel":"c","data":1}}"#,
        #"{"id":99999999999,"publish":{"channel":"c","data":1}}"#,
        #"{"id":1.0,"publish":{"channel":"c","data":1}}"#,
        #"{"id":1e0,"publish":{"channel":"c","data":1}}"#,
        #"{"id":-1,"publish":{"channel":"c","data":1}}"#,
        // Other members, other orders, duplicates, escapes, other commands, several commands.
        #"{"publish":{"channel":"c","data":1},"id":1}"#,
        #"{"id":1,"publish":{"channel":"c","data":1,"idempotencyKey":"k"}}"#,
        #"{"id":1,"publish":{"channel":"c","channel":"d","data":1}}"#,
        #"{"id":1,"publish":{"channel":"c","data":1,"data":2}}"#,
        #"{"id":1,"publish":{"data":1}}"#,
        #"{"id":1,"publish":{"channel":"c"}}"#,
        #"{"id":1,"publish":{"chan\u006eel":"c","data":1}}"#,
        #"{"id":1,"publish":{"channel":"\u0063","data":1}}"#,
        #"{"id":1,"publish":{"channel":"c","data":1},"x":2}"#,
        #"{"id":1,"publish":null}"#,
        #"{"id":1,"subscribe":{"channel":"c"}}"#,
        "{\"id\":1,\"publish\":{\"channel\":\"c\",\"data\":1}}\n{\"id\":2,\"publish\":{\"channel\":\"c\",\"data\":1}}",
        // A channel name the general path answers with an error.
        #"{"id":1,"publish":{"channel":"","data":1}}"#,
        "{\"id\":1,\"publish\":{\"channel\":\"\(String(repeating: "c", count: 300))\",\"data\":1}}",
    ]

    @Test("leaves everything else to the general path", arguments: Self.otherFrames)
    func leftToTheGeneralPath(_ text: String) {
        #expect(Self.fast(text) == nil)
    }

    @Test("keeps the general path's depth and value limits exactly, at the boundary")
    func limits() {
        // The data is parsed at depth 2: with a maximum depth of 64 it may nest 62 arrays, not 63.
        for (levels, accepted) in [(62, true), (63, false)] {
            let data = String(repeating: "[", count: levels) + String(repeating: "]", count: levels)
            let text = #"{"id":1,"publish":{"channel":"c","data":"# + data + "}}"
            #expect((Self.general(text) != nil) == accepted)
            #expect((Self.fast(text) != nil) == accepted)
            #expect(Self.fast(text) == Self.general(text))
        }
        // Four values before the data (command, id, publish, channel): 50,000 in all is the limit.
        let parser = ClientMessage.parser(maximumDepth: 64, maximumValues: 10)
        for (elements, accepted) in [(5, true), (6, false)] {
            let data = "[" + Array(repeating: "0", count: elements).joined(separator: ",") + "]"
            for text in [#"{"id":1,"publish":{"channel":"c","data":"# + data + "}}", #"{"id":1,"publish":{"data":"# + data + #","channel":"c"}}"#] {
                let general = (try? parser.parseSequence(Array(text.utf8))).flatMap { try? ClientMessage.parse($0[0]) }
                let fast = Array(text.utf8).withUnsafeBufferPointer { ClientMessage.parsePublish($0, parser: parser) }
                #expect((general != nil) == accepted, "\(text)")
                #expect(fast == general, "\(text)")
            }
        }
    }
}
