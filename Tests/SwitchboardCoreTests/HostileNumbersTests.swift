import Crypto
import SwitchboardCore
import Testing

/// Numbers and strings a client controls, at the edge of what they may be.
@Suite("Client numbers are range-checked where they are parsed")
struct HostileNumbersTests {
    static func command(_ text: String) throws -> ClientMessage {
        try ClientMessage.parse(try JSONParser().parse(Array(text.utf8)))
    }

    static func isBadRequest(_ message: ClientMessage) -> Bool {
        if case .invalid(_, let error) = message { return error.code == .badRequest }
        return false
    }

    @Test("offsets above Int64.max are refused with 107 in subscribe, history and connect", arguments: [
        #"{"id":1,"subscribe":{"channel":"a","since":{"offset":9223372036854775808,"epoch":"e"}}}"#,
        #"{"id":1,"subscribe":{"channel":"a","since":{"offset":18446744073709551615,"epoch":"e"}}}"#,
        #"{"id":1,"history":{"channel":"a","since":{"offset":18446744073709551615,"epoch":"e"}}}"#,
        #"{"id":1,"connect":{"subs":{"a":{"offset":18446744073709551615,"epoch":"e"}}}}"#,
        #"{"id":1,"subscribe":{"channel":"a","since":{"offset":1e3,"epoch":"e"}}}"#,
        #"{"id":1,"subscribe":{"channel":"a","since":{"offset":-1,"epoch":"e"}}}"#,
    ])
    func offsetTooLarge(_ text: String) throws {
        #expect(Self.isBadRequest(try Self.command(text)))
    }

    @Test("Int64.max itself is a valid offset")
    func largestOffset() throws {
        let message = try Self.command(#"{"id":1,"subscribe":{"channel":"a","since":{"offset":9223372036854775807,"epoch":"e"}}}"#)
        guard case .command(let command) = message, case .subscribe(let params) = command.method else {
            Issue.record("not a subscribe: \(message)")
            return
        }
        #expect(params.since?.offset == UInt64(Int64.max))
    }

    @Test("a Last-Event-ID naming an offset above Int64.max is refused")
    func resumeIDOffset() {
        let id = Base64URL.encode(Array(#"{"a":{"offset":18446744073709551615,"epoch":"e"}}"#.utf8))
        #expect(throws: SwitchboardError.self) { try ResumeID.decode(Substring(id)) }
    }

    @Test("idempotency keys of more than 128 bytes, or empty, are refused with 107")
    func idempotencyKey() throws {
        let long = String(repeating: "k", count: 129)
        #expect(Self.isBadRequest(try Self.command(#"{"id":1,"publish":{"channel":"a","data":1,"idempotencyKey":"\#(long)"}}"#)))
        #expect(Self.isBadRequest(try Self.command(#"{"id":1,"publish":{"channel":"a","data":1,"idempotencyKey":""}}"#)))
        let fits = String(repeating: "k", count: 128)
        let message = try Self.command(#"{"id":1,"publish":{"channel":"a","data":1,"idempotencyKey":"\#(fits)"}}"#)
        guard case .command(let command) = message, case .publish(let params) = command.method else {
            Issue.record("not a publish: \(message)")
            return
        }
        #expect(params.idempotencyKey == fits)
    }

    @Test("epochs longer than 64 bytes are refused")
    func longEpoch() throws {
        let epoch = String(repeating: "e", count: 65)
        #expect(Self.isBadRequest(try Self.command(#"{"id":1,"subscribe":{"channel":"a","since":{"offset":1,"epoch":"\#(epoch)"}}}"#)))
    }

    @Test("history limits of any size parse without trapping; negative means the most allowed", arguments: [
        ("99999999999999999999999999", Int.max), ("-99999999999999999999999", -1), ("-5", -1), ("0", 0), ("20", 20),
    ])
    func historyLimit(_ literal: String, _ expected: Int) throws {
        let message = try Self.command(#"{"id":1,"history":{"channel":"a","limit":\#(literal)}}"#)
        guard case .command(let command) = message, case .history(let params) = command.method else {
            Issue.record("not a history: \(message)")
            return
        }
        #expect(params.limit == expected)
    }

    @Test("a fractional history limit is refused")
    func fractionalLimit() throws {
        #expect(Self.isBadRequest(try Self.command(#"{"id":1,"history":{"channel":"a","limit":1.5}}"#)))
    }

    @Test("connect subs past the cap are refused with 106")
    func manySubs() {
        let subs = (0..<11).map { #""c\#($0)":{}"# }.joined(separator: ",")
        #expect(throws: SwitchboardError.self) {
            try ConnectParams.parseSubs(try JSONParser().parse(Array("{\(subs)}".utf8)), maximumSubs: 10)
        }
    }
}

@Suite("Token times of any size")
struct TokenTimesTests {
    /// The claims of a payload text (so the times can be any JSON number).
    func claims(_ payload: String) throws(TokenFailure) -> ConnectionTokenClaims {
        guard let value = try? JSONParser().parse(Array(payload.utf8)) else { throw .invalid("test JSON") }
        return try ConnectionTokenClaims(payload: value, now: 1_000, policy: TokenClaimPolicy())
    }

    @Test("huge finite exp values verify and keep their value", arguments: ["9.3e15", "1e300", "9223372036854775808", "18446744073709551615"])
    func hugeExp(_ exp: String) throws {
        #expect(try self.claims(#"{"sub":"u","exp":\#(exp)}"#).expiresAt == Double(exp))
    }

    @Test("infinite or non-numeric times are invalid", arguments: [
        #"{"sub":"u","exp":1e400}"#, #"{"sub":"u","exp":-1e400}"#, #"{"sub":"u","nbf":1e400}"#,
        #"{"sub":"u","iat":1e999}"#, #"{"sub":"u","exp":"soon"}"#,
    ])
    func infinite(_ payload: String) {
        #expect(throws: TokenFailure.self) { try self.claims(payload) }
    }

    @Test("a token used before its nbf (beyond the leeway) is invalid")
    func notBefore() throws {
        #expect(throws: TokenFailure.self) { try self.claims(#"{"sub":"u","nbf":2000}"#) }
        #expect(try self.claims(#"{"sub":"u","nbf":500}"#).user == "u")
    }
}
