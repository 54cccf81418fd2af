import NIOCore
import SwitchboardCore
import Testing

@Suite("Token claims")
struct TokenClaimsTests {
    static let now: Double = 1_000_000
    static let policy = TokenClaimPolicy()

    static func payload(_ json: String) throws -> JSONValue { try JSONParser().parse(Array(json.utf8)) }

    static func connection(_ json: String, policy: TokenClaimPolicy = Self.policy, now: Double = Self.now) throws(TokenFailure) -> ConnectionTokenClaims {
        let value: JSONValue
        do { value = try Self.payload(json) } catch { throw .invalid("test JSON") }
        return try ConnectionTokenClaims(payload: value, now: now, policy: policy)
    }

    @Test("exp: expired beyond the leeway, accepted within it", arguments: [
        (-6.0, false), (-5.0, false), (-4.0, true), (0.0, true), (100.0, true),
    ])
    func expiry(_ offset: Double, _ accepted: Bool) throws {
        let json = #"{"sub":"u","exp":\#(Int(Self.now + offset))}"#
        if accepted {
            #expect(try Self.connection(json).expiresAt == Self.now + offset)
        } else {
            #expect(throws: TokenFailure.expired) { try Self.connection(json) }
        }
    }

    @Test("sub must be in Unicode NFC: a decomposed spelling of a user is refused, a precomposed one and ASCII pass")
    func subIsNFC() throws {
        // "José": precomposed U+00E9, and "e" + U+0301 (the same user to Swift's ==, other bytes to Redis).
        #expect(try Self.connection(#"{"sub":"Jos\u00e9"}"#).user == "Jos\u{E9}")
        #expect(try Self.connection(#"{"sub":"alice"}"#).user == "alice")
        #expect(throws: TokenFailure.invalid("sub is not in Unicode NFC")) { try Self.connection(#"{"sub":"Jose\u0301"}"#) }
        // A subscription token for the decomposed spelling does not match the precomposed user.
        let decomposed = try Self.payload(#"{"sub":"Jose\u0301","channel":"$a:1"}"#)
        #expect(throws: TokenFailure.self) {
            try SubscriptionTokenClaims(payload: decomposed, user: "Jos\u{E9}", channel: "$a:1", now: Self.now, policy: Self.policy)
        }
    }

    @Test("meta is kept as server-side data, capped like info; a client sees info, never meta")
    func metaIsServerSide() throws {
        let claims = try Self.connection(#"{"sub":"u","info":{"name":"U"},"meta":{"plan":"pro","secret":7}}"#)
        #expect(claims.meta == .object(JSONObject([("plan", .string("pro")), ("secret", .number("7"))])))
        let big = String(repeating: "x", count: Self.policy.maximumInfoBytes)
        #expect(throws: TokenFailure.invalid("meta is larger than \(Self.policy.maximumInfoBytes) bytes")) {
            try Self.connection(#"{"sub":"u","meta":"\#(big)"}"#)
        }
        let info = ClientInfo(client: "c", user: "u", info: claims.info, meta: claims.meta)
        var forClients = ByteBuffer()
        forClients.writeClientInfo(info)
        #expect(String(buffer: forClients) == #"{"client":"c","user":"u","info":{"name":"U"}}"#)
        var forBackends = ByteBuffer()
        forBackends.writeClientInfo(info, includingMeta: true)
        #expect(String(buffer: forBackends) == #"{"client":"c","user":"u","info":{"name":"U"},"meta":{"plan":"pro","secret":7}}"#)
        #expect(info.withoutMeta == ClientInfo(client: "c", user: "u", info: claims.info))
    }

    @Test("nbf ahead of now beyond the leeway is invalid")
    func notBefore() throws {
        #expect(throws: TokenFailure.invalid("nbf is in the future")) { try Self.connection(#"{"sub":"u","nbf":1000006}"#) }
        #expect(try Self.connection(#"{"sub":"u","nbf":1000005}"#).user == "u")
    }

    @Test("leeway defaults to 5 s and is clamped to 0...60")
    func leeway() {
        #expect(TokenClaimPolicy().leeway == 5)
        #expect(TokenClaimPolicy(leeway: 3600).leeway == 60)
        #expect(TokenClaimPolicy(leeway: -1).leeway == 0)
        #expect(TokenClaimPolicy(leeway: .nan).leeway == 5)
    }

    @Test("aud and iss are enforced only when configured")
    func audienceIssuer() throws {
        let strict = TokenClaimPolicy(audience: "switchboard", issuer: "auth.example")
        #expect(try Self.connection(#"{"sub":"u","aud":"switchboard","iss":"auth.example"}"#, policy: strict).user == "u")
        #expect(try Self.connection(#"{"sub":"u","aud":["x","switchboard"],"iss":"auth.example"}"#, policy: strict).user == "u")
        #expect(throws: TokenFailure.invalid("aud does not match")) { try Self.connection(#"{"sub":"u","aud":"other","iss":"auth.example"}"#, policy: strict) }
        #expect(throws: TokenFailure.invalid("aud is missing")) { try Self.connection(#"{"sub":"u","iss":"auth.example"}"#, policy: strict) }
        #expect(throws: TokenFailure.invalid("iss does not match")) { try Self.connection(#"{"sub":"u","aud":"switchboard","iss":"evil"}"#, policy: strict) }
        #expect(throws: TokenFailure.invalid("iss does not match")) { try Self.connection(#"{"sub":"u","aud":"switchboard"}"#, policy: strict) }
        #expect(try Self.connection(#"{"sub":"u","aud":"anything","iss":"anyone"}"#).user == "u")
    }

    @Test("expire_at overrides exp for the connection's life; 0 means never; past is expired")
    func expireAt() throws {
        #expect(try Self.connection(#"{"sub":"u","exp":1000100,"expire_at":1005000}"#).expiresAt == 1_005_000)
        #expect(try Self.connection(#"{"sub":"u","exp":1000100,"expire_at":0}"#).expiresAt == nil)
        #expect(throws: TokenFailure.expired) { try Self.connection(#"{"sub":"u","exp":1000100,"expire_at":999000}"#) }
        // exp still limits when the token may be presented.
        #expect(throws: TokenFailure.expired) { try Self.connection(#"{"sub":"u","exp":999000,"expire_at":1005000}"#) }
    }

    @Test("a connection token carrying channel is refused")
    func channelInConnectionToken() {
        #expect(throws: TokenFailure.invalid("a connection token must not carry channel")) { try Self.connection(#"{"sub":"u","channel":"news"}"#) }
    }

    @Test("info is capped at 2 KB; meta, jti and channels are read")
    func infoAndMore() throws {
        let big = String(repeating: "x", count: 2100)
        #expect(throws: TokenFailure.self) { try Self.connection(#"{"sub":"u","info":{"bio":"\#(big)"}}"#) }
        let claims = try Self.connection(#"{"sub":"u","jti":"t1","info":{"name":"Ann"},"meta":{"role":"admin"},"channels":["news","chat:1"]}"#)
        #expect(claims.tokenID == "t1")
        #expect(claims.info == .object(JSONObject([("name", .string("Ann"))])))
        #expect(claims.meta == .object(JSONObject([("role", .string("admin"))])))
        #expect(claims.channels == ["news", "chat:1"])
        #expect(throws: TokenFailure.self) { try Self.connection(#"{"sub":"u","channels":"news"}"#) }
        #expect(throws: TokenFailure.self) { try Self.connection(#"{"sub":"u","channels":[""]}"#) }
    }

    @Test("an empty or missing sub is an anonymous connection; a non-string sub is invalid")
    func subject() throws {
        #expect(try Self.connection(#"{"exp":1000100}"#).user == "")
        #expect(try Self.connection(#"{"sub":""}"#).user == "")
        #expect(throws: TokenFailure.self) { try Self.connection(#"{"sub":42}"#) }
        #expect(throws: TokenFailure.self) { try Self.connection(#"{"sub":"\#(String(repeating: "a", count: 257))"}"#) }
        #expect(throws: TokenFailure.self) { try Self.connection(#"["sub"]"#) }
    }

    @Test("times that are not finite numbers are invalid", arguments: [
        #"{"sub":"u","exp":1e400}"#, #"{"sub":"u","nbf":"soon"}"#, #"{"sub":"u","iat":-1e999}"#, #"{"sub":"u","expire_at":true}"#,
    ])
    func badTimes(_ json: String) {
        #expect(throws: TokenFailure.self) { try Self.connection(json) }
    }

    @Test("subscription token: sub and channel must match exactly")
    func subscription() throws {
        let value = try Self.payload(#"{"sub":"alice","channel":"$a:1","exp":1000100,"info":{"r":1}}"#)
        let claims = try SubscriptionTokenClaims(payload: value, user: "alice", channel: "$a:1", now: Self.now, policy: Self.policy)
        #expect(claims.expiresAt == 1_000_100)
        #expect(throws: TokenFailure.self) { try SubscriptionTokenClaims(payload: value, user: "bob", channel: "$a:1", now: Self.now, policy: Self.policy) }
        #expect(throws: TokenFailure.self) { try SubscriptionTokenClaims(payload: value, user: "alice", channel: "$a:2", now: Self.now, policy: Self.policy) }
        #expect(throws: TokenFailure.self) { try SubscriptionTokenClaims(payload: value, user: "", channel: "$a:1", now: Self.now, policy: Self.policy) }
        let noChannel = try Self.payload(#"{"sub":"alice"}"#)
        #expect(throws: TokenFailure.self) { try SubscriptionTokenClaims(payload: noChannel, user: "alice", channel: "$a:1", now: Self.now, policy: Self.policy) }
        #expect(throws: TokenFailure.expired) { try SubscriptionTokenClaims(payload: value, user: "alice", channel: "$a:1", now: 1_000_200, policy: Self.policy) }
    }
}
