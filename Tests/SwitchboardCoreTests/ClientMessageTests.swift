import SwitchboardCore
import Testing

@Suite("ClientMessage")
struct ClientMessageTests {
    func message(_ text: String) throws -> ClientMessage {
        try ClientMessage.parse(try ClientMessage.parser().parse(Array(text.utf8)))
    }

    @Test("an empty object is a pong")
    func pong() throws {
        #expect(try message("{}") == .pong)
    }

    @Test("parses every method")
    func methods() throws {
        #expect(try message(#"{"id":1,"connect":{"token":"t","subs":{"a":{"offset":3,"epoch":"e"},"b":{}}}}"#)
            == .command(ClientCommand(id: 1, method: .connect(ConnectParams(token: "t", subs: [("a", StreamPosition(offset: 3, epoch: "e")), ("b", nil)])))))
        #expect(try message(#"{"id":1,"connect":{"subs":{"$a":{"offset":3,"epoch":"e","token":"ta"},"$b":{"token":"tb"},"c":{}}}}"#)
            == .command(ClientCommand(id: 1, method: .connect(ConnectParams(
                subs: [("$a", StreamPosition(offset: 3, epoch: "e")), ("$b", nil), ("c", nil)], subTokens: ["$a": "ta", "$b": "tb"])))))
        #expect(try message(#"{"id":2,"subscribe":{"channel":"chat:x","since":{"offset":5,"epoch":"ab"}}}"#)
            == .command(ClientCommand(id: 2, method: .subscribe(SubscribeParams(channel: "chat:x", since: StreamPosition(offset: 5, epoch: "ab"))))))
        #expect(try message(#"{"id":3,"unsubscribe":{"channel":"c"}}"#) == .command(ClientCommand(id: 3, method: .unsubscribe(channel: "c"))))
        #expect(try message(#"{"id":4,"publish":{"channel":"c","data":{"x":1},"idempotencyKey":"k"}}"#)
            == .command(ClientCommand(id: 4, method: .publish(PublishParams(channel: "c", data: try RawJSON(validating: Array(#"{"x":1}"#.utf8)), idempotencyKey: "k")))))
        #expect(try message(#"{"id":5,"presence":{"channel":"c"}}"#) == .command(ClientCommand(id: 5, method: .presence(channel: "c"))))
        #expect(try message(#"{"id":6,"presenceStats":{"channel":"c"}}"#) == .command(ClientCommand(id: 6, method: .presenceStats(channel: "c"))))
        #expect(try message(#"{"id":7,"history":{"channel":"c","limit":5,"reverse":true}}"#)
            == .command(ClientCommand(id: 7, method: .history(HistoryParams(channel: "c", limit: 5, reverse: true)))))
        #expect(try message(#"{"id":8,"ping":{}}"#) == .command(ClientCommand(id: 8, method: .ping)))
        #expect(try message(#"{"id":9,"rpc":{}}"#) == .command(ClientCommand(id: 9, method: .unknown("rpc"))))
        #expect(try message(#"{"id":10,"refresh":{"token":"t2"}}"#) == .command(ClientCommand(id: 10, method: .refresh(token: "t2"))))
        #expect(try message(#"{"id":11,"subRefresh":{"channel":"$c","token":"t3"}}"#)
            == .command(ClientCommand(id: 11, method: .subRefresh(channel: "$c", token: "t3"))))
    }

    @Test("refresh and subRefresh need a non-empty token (and subRefresh a valid channel): 107, the connection stays", arguments: [
        #"{"id":1,"refresh":{}}"#, #"{"id":1,"refresh":{"token":""}}"#, #"{"id":1,"refresh":{"token":5}}"#,
        #"{"id":1,"subRefresh":{"token":"t"}}"#, #"{"id":1,"subRefresh":{"channel":"c"}}"#, #"{"id":1,"subRefresh":{"channel":"","token":"t"}}"#,
    ])
    func refreshParameters(_ text: String) throws {
        guard case .invalid(let id, let error) = try self.message(text) else {
            Issue.record("\(text) was not refused")
            return
        }
        #expect(id == 1)
        #expect(error.code == .badRequest)
    }

    @Test("frames that break the protocol", arguments: [
        "[]", "1", #"{"connect":{}}"#, #"{"id":0,"ping":{}}"#, #"{"id":-1,"ping":{}}"#, #"{"id":"1","ping":{}}"#,
        #"{"id":1.5,"ping":{}}"#, #"{"id":1}"#, #"{"id":99999999999,"ping":{}}"#,
    ])
    func violations(_ text: String) {
        #expect(throws: ProtocolViolation.self) { try self.message(text) }
    }

    @Test("bad parameters are answered, not fatal", arguments: [
        (#"{"id":1,"subscribe":{}}"#, 107),
        (#"{"id":1,"connect":{"subs":{"c":{"token":"t"},"c":{},"c":{}}}}"#, 107),
        (#"{"id":1,"subscribe":{"channel":""}}"#, 107),
        (#"{"id":1,"subscribe":{"channel":"a\u0001b"}}"#, 107),
        (#"{"id":1,"subscribe":{"channel":"c","since":{"offset":"x","epoch":"e"}}}"#, 107),
        (#"{"id":1,"publish":{"channel":"c"}}"#, 107),
        (#"{"id":1,"history":{"channel":"c","limit":"x"}}"#, 107),
        (#"{"id":1,"ping":[]}"#, 107),
    ])
    func invalidParams(_ text: String, _ code: Int) throws {
        guard case .invalid(let id, let error) = try message(text) else {
            Issue.record("expected an invalid command")
            return
        }
        #expect(id == 1)
        #expect(error.code.rawValue == code)
    }

    @Test("channel names: 255 bytes is fine, 256 is not")
    func channelLength() throws {
        try ChannelName.validate(String(repeating: "a", count: 255))
        #expect(throws: SwitchboardError.self) { try ChannelName.validate(String(repeating: "a", count: 256)) }
        #expect(throws: SwitchboardError.self) { try ChannelName.validate("a\u{7F}") }
        try ChannelName.validate("chat:ünïcode")
    }

    @Test("channel names must be NFC: canonically equivalent names are one String but two byte strings (shard hash, Redis key)")
    func channelNormalization() throws {
        let composed = "chat:caf\u{E9}", decomposed = "chat:cafe\u{301}"
        #expect(composed == decomposed)  // Swift's String equality: why the bytes must be pinned down
        #expect(ChannelShard.hash(composed) != ChannelShard.hash(decomposed))  // ...while their bytes hash apart
        try ChannelName.validate(composed)
        #expect(throws: SwitchboardError.self) { try ChannelName.validate(decomposed) }
        #expect(throws: SwitchboardError.self) { try ChannelName.validate("\u{212B}") }  // ANGSTROM SIGN: NFC is U+00C5
        try ChannelName.validate("\u{C5}")
        try ChannelName.validate("chat:日本語:한국어")
    }

    @Test("glob patterns")
    func patterns() {
        #expect(ChannelName.matches("chat:lobby", pattern: "chat:*"))
        #expect(ChannelName.matches("chat:lobby", pattern: "*lob*"))
        #expect(!ChannelName.matches("news:x", pattern: "chat:*"))
        #expect(ChannelName.matches("abc", pattern: "abc"))
        #expect(!ChannelName.matches("abcd", pattern: "abc"))
    }
}
