import Crypto
import SwitchboardAuth
import SwitchboardCore
import Testing
import CryptoExtras

@Suite("VerifiedTokenCache")
struct VerifiedTokenCacheTests {
    static let now: Double = 1_700_000_000

    static func p256Key(kid: String? = "e1", _ privateKey: P256.Signing.PrivateKey = TestKeys.p256) throws -> VerificationKey {
        try VerificationKey(pem: privateKey.publicKey.pemRepresentation, kid: kid, source: "pem:test")
    }

    static func token(exp: Double = now + 600, kid: String = "e1", signer: P256.Signing.PrivateKey = TestKeys.p256) throws -> String {
        try TokenMinter.mint(
            header: TokenMinter.header("ES256", kid: kid), payload: #"{"sub":"alice","exp":\#(Int(exp))}"#, signer: .p256(signer), algorithm: "ES256")
    }

    @Test("a token verified once is answered from the cache the next time, with the same claims")
    func hit() throws {
        let cache = VerifiedTokenCache()
        let verifier = JWTVerifier(keys: [try Self.p256Key()], cache: cache)
        let token = try Self.token()
        let first = try verifier.verifyConnectionToken(token, now: Self.now)
        let second = try verifier.verifyConnectionToken(token, now: Self.now + 1)
        #expect(first.user == "alice" && second.user == "alice")
        #expect(cache.count == 1)
        #expect(cache.statistics.hits == 1 && cache.statistics.misses == 1)
    }

    @Test("claims are checked on every use: a cached token past its exp (and the leeway) is refused")
    func claimsCheckedOnEveryUse() throws {
        let verifier = JWTVerifier(keys: [try Self.p256Key()], cache: VerifiedTokenCache())
        let token = try Self.token(exp: Self.now + 10)
        _ = try verifier.verifyConnectionToken(token, now: Self.now)
        #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(token, now: Self.now + 10 + 60) }
    }

    @Test("a bad signature is never cached: the same forged token fails every time")
    func badSignatureNeverCached() throws {
        let cache = VerifiedTokenCache()
        let verifier = JWTVerifier(keys: [try Self.p256Key()], cache: cache)
        let forged = try Self.token(signer: P256.Signing.PrivateKey())  // signed by another key, same kid
        for _ in 0..<3 {
            #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(forged, now: Self.now) }
        }
        #expect(cache.count == 0)
        // One changed character of a good token is another text: a miss, then a failed verification.
        let good = try Self.token()
        _ = try verifier.verifyConnectionToken(good, now: Self.now)
        var bytes = Array(good.utf8)
        bytes[bytes.count - 2] = bytes[bytes.count - 2] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let tampered = String(decoding: bytes, as: UTF8.self)
        #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(tampered, now: Self.now) }
    }

    @Test("an entry counts only while the key its header picks is the one that verified it (rotation, removal)")
    func keyChangeInvalidates() throws {
        let cache = VerifiedTokenCache()
        let token = try Self.token()
        // Verified with a JWKS key e1 ...
        let verifier = JWTVerifier(keys: [], cache: cache)
        _ = try verifier.verifyConnectionToken(token, now: Self.now, extraKeys: [try Self.p256Key()])
        #expect(cache.count == 1)
        // ... which the set no longer has: refused, although the text is in the cache.
        #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(token, now: Self.now, extraKeys: []) }
        // ... or e1 is now another key: refused too.
        let rotated = try Self.p256Key(P256.Signing.PrivateKey())
        #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(token, now: Self.now, extraKeys: [rotated]) }
        // The original key back: accepted.
        _ = try verifier.verifyConnectionToken(token, now: Self.now, extraKeys: [try Self.p256Key()])
    }

    @Test("bounded by entries and by bytes")
    func bounded() throws {
        let cache = VerifiedTokenCache(maximumEntries: 5, maximumBytes: 1 << 20)
        let key = try VerificationKey(hmacSecret: TestKeys.secret, kid: nil, algorithms: [.hs256])
        let verifier = JWTVerifier(keys: [key], cache: cache)
        for i in 0..<50 {
            let token = try TokenMinter.mint(
                header: TokenMinter.header("HS256"), payload: #"{"sub":"u\#(i)","exp":\#(Int(Self.now) + 600)}"#, signer: .hmac(TestKeys.secret),
                algorithm: "HS256")
            _ = try verifier.verifyConnectionToken(token, now: Self.now)
            #expect(cache.count <= 5)
        }
        let small = VerifiedTokenCache(maximumEntries: 1000, maximumBytes: 1024)
        let byBytes = JWTVerifier(keys: [key], cache: small)
        for i in 0..<50 {
            let token = try TokenMinter.mint(
                header: TokenMinter.header("HS256"), payload: #"{"sub":"user-\#(i)","exp":\#(Int(Self.now) + 600)}"#, signer: .hmac(TestKeys.secret),
                algorithm: "HS256")
            _ = try byBytes.verifyConnectionToken(token, now: Self.now)
        }
        #expect(small.count > 0 && small.count * 100 <= 1024)  // each token is over 100 bytes
    }

    @Test("when full, the oldest tokens go first: the newest ones are still answered from the cache")
    func oldestGoFirst() throws {
        let cache = VerifiedTokenCache(maximumEntries: 5, maximumBytes: 1 << 20)
        let key = try VerificationKey(hmacSecret: TestKeys.secret, kid: nil, algorithms: [.hs256])
        let verifier = JWTVerifier(keys: [key], cache: cache)
        let tokens = try (0..<300).map { i in
            try TokenMinter.mint(
                header: TokenMinter.header("HS256"), payload: #"{"sub":"u\#(i)","exp":\#(Int(Self.now) + 600)}"#, signer: .hmac(TestKeys.secret),
                algorithm: "HS256")
        }
        for token in tokens { _ = try verifier.verifyConnectionToken(token, now: Self.now) }
        #expect(cache.count == 5)
        // The last five are held (hits); the one before them is gone (a miss, verified and stored again).
        let before = cache.statistics
        for token in tokens.suffix(5) { _ = try verifier.verifyConnectionToken(token, now: Self.now) }
        #expect(cache.statistics.hits == before.hits + 5)
        _ = try verifier.verifyConnectionToken(tokens[294], now: Self.now)
        #expect(cache.statistics.misses == before.misses + 1)
        // Presented again, a held token keeps its age: it does not push a newer one out early.
        _ = try verifier.verifyConnectionToken(tokens[296], now: Self.now)  // held: a hit, no new entry
        #expect(cache.count == 5)
    }
}
