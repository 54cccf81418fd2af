import SwitchboardCore
import Testing

@Suite("TokenVerifier")
struct TokenVerifierTests {
    let verifier = TokenVerifier(secret: "s3cret")

    @Test("a signed token gives its claims")
    func valid() throws {
        let token = verifier.sign(user: "u1", expiresAt: 4_000_000_000, info: .object(JSONObject([("name", .string("Ann"))])))
        let claims = try verifier.verify(token, now: 1_000)
        #expect(claims.user == "u1")
        #expect(claims.expiresAt == 4_000_000_000)
        #expect(claims.info?["name"] == .string("Ann"))
    }

    @Test("a known HS256 token from another implementation verifies")
    func interoperable() throws {
        // Made with Python's hmac and base64 modules: HS256 over {"alg":"HS256","typ":"JWT"}.{"sub":"42"} with "s3cret".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiJ9.tI1z8XNSbBhPKPHuXk8bh52K5u8ApiSn9F4rxMY8u6A"
        #expect(try verifier.verify(token).user == "42")
    }

    @Test("expired tokens are refused as expired")
    func expired() {
        let token = verifier.sign(user: "u1", expiresAt: 999)
        #expect(throws: TokenVerifier.Failure.expired) { try verifier.verify(token, now: 1_000) }
    }

    @Test("tampered, foreign or malformed tokens are invalid", arguments: [
        "", "a.b", "a.b.c", "...", "not a token at all",
        TokenVerifier(secret: "other").sign(user: "u1"),
    ])
    func invalid(_ token: String) {
        #expect(throws: TokenVerifier.Failure.invalid) { try verifier.verify(token) }
    }

    @Test("changing the payload breaks the signature")
    func tampered() {
        let token = verifier.sign(user: "u1")
        let parts = token.split(separator: ".")
        let forged = verifier.sign(user: "admin").split(separator: ".")
        let mixed = [parts[0], forged[1], parts[2]].joined(separator: ".")
        #expect(throws: TokenVerifier.Failure.invalid) { try verifier.verify(mixed) }
    }

    @Test("alg none is refused")
    func algNone() {
        // {"alg":"none"}.{"sub":"u1"}.
        #expect(throws: TokenVerifier.Failure.invalid) { try verifier.verify("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.") }
    }
}
