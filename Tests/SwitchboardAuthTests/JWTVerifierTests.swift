import Crypto
import CryptoExtras
import NIOCore
import NIOPosix
import SwitchboardAuth
import SwitchboardCore
import Testing

@Suite("JWTVerifier")
struct JWTVerifierTests {
    static let now: Double = 1_700_000_000
    static let payload = #"{"sub":"alice","exp":1700000600}"#

    static func hmacKey(kid: String? = nil, algorithms: [JWTAlgorithm] = [.hs256]) throws -> VerificationKey {
        try VerificationKey(hmacSecret: TestKeys.secret, kid: kid, algorithms: algorithms)
    }
    static func rsaKey(kid: String? = nil) throws -> VerificationKey {
        try VerificationKey(pem: TestKeys.rsa.publicKey.pemRepresentation, kid: kid, source: "pem:test")
    }
    static func p256Key(kid: String? = nil) throws -> VerificationKey {
        try VerificationKey(pem: TestKeys.p256.publicKey.pemRepresentation, kid: kid, source: "pem:test")
    }
    static func p384Key(kid: String? = nil) throws -> VerificationKey {
        try VerificationKey(pem: TestKeys.p384.publicKey.pemRepresentation, kid: kid, source: "pem:test")
    }

    @Test("every supported algorithm verifies with its key", arguments: JWTAlgorithm.allCases)
    func everyAlgorithm(_ algorithm: JWTAlgorithm) throws {
        let key: VerificationKey
        let signer: TokenMinter.Signer
        switch algorithm.family {
        case .hmac:
            key = try Self.hmacKey(algorithms: [algorithm])
            signer = .hmac(TestKeys.secret)
        case .rsa:
            key = try Self.rsaKey()
            signer = .rsa(TestKeys.rsa)
        case .p256:
            key = try Self.p256Key()
            signer = .p256(TestKeys.p256)
        case .p384:
            key = try Self.p384Key()
            signer = .p384(TestKeys.p384)
        }
        let token = try TokenMinter.mint(header: TokenMinter.header(algorithm.rawValue), payload: Self.payload, signer: signer, algorithm: algorithm.rawValue)
        let claims = try JWTVerifier(keys: [key]).verifyConnectionToken(token, now: Self.now)
        #expect(claims.user == "alice")
        #expect(claims.expiresAt == 1_700_000_600)
        // One flipped signature bit fails.
        var parts = token.split(separator: ".").map(String.init)
        var sig = Base64URL.decode(Substring(parts[2]))!
        sig[sig.count / 2] ^= 0x01
        parts[2] = Base64URL.encode(sig)
        #expect(throws: TokenFailure.invalid("bad signature")) { try JWTVerifier(keys: [key]).verifyConnectionToken(parts.joined(separator: "."), now: Self.now) }
    }

    @Test("one HMAC key verifies token after token for each algorithm it allows; a truncated MAC is refused")
    func hmacKeyVerifiesInARow() throws {
        // The key's hash states are prepared once; each verification must start from them afresh.
        let key = try Self.hmacKey(algorithms: [.hs256, .hs384, .hs512])
        let verifier = JWTVerifier(keys: [key])  // no cache: every token is verified in full
        var tokens: [(String, String)] = []
        for round in 0..<3 {
            for algorithm in [JWTAlgorithm.hs256, .hs384, .hs512] {
                let user = "user\(round)-\(algorithm.rawValue)"
                let payload = #"{"sub":"\#(user)","exp":1700000600}"#
                tokens.append((user, try TokenMinter.mint(header: TokenMinter.header(algorithm.rawValue), payload: payload, signer: .hmac(TestKeys.secret), algorithm: algorithm.rawValue)))
            }
        }
        for (user, token) in tokens + tokens.reversed() {
            #expect(try verifier.verifyConnectionToken(token, now: Self.now).user == user)
        }
        var parts = tokens[0].1.split(separator: ".").map(String.init)
        parts[2] = Base64URL.encode(Array(Base64URL.decode(Substring(parts[2]))!.prefix(16)))
        #expect(throws: TokenFailure.invalid("bad signature")) { try verifier.verifyConnectionToken(parts.joined(separator: "."), now: Self.now) }
    }

    @Test("alg none in any spelling never passes", arguments: ["none", "None", "NONE", "nOnE", ""])
    func algNone(_ alg: String) throws {
        let verifier = JWTVerifier(keys: [try Self.hmacKey()])
        let unsigned = TokenMinter.encode(#"{"alg":"\#(alg)"}"#) + "." + TokenMinter.encode(Self.payload) + "."
        #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(unsigned, now: Self.now) }
        let withSig = try TokenMinter.mint(header: #"{"alg":"\#(alg)"}"#, payload: Self.payload, signer: .hmac(TestKeys.secret), algorithm: "HS256")
        #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(withSig, now: Self.now) }
    }

    @Test("HS256 MACed with the RSA public key PEM is refused (algorithm confusion)")
    func algorithmConfusion() throws {
        let pem = TestKeys.rsa.publicKey.pemRepresentation
        let token = try TokenMinter.mint(header: TokenMinter.header("HS256"), payload: Self.payload, signer: .hmac(Array(pem.utf8)), algorithm: "HS256")
        #expect(throws: TokenFailure.self) { try JWTVerifier(keys: [try Self.rsaKey()]).verifyConnectionToken(token, now: Self.now) }
        let pkcs1 = TestKeys.rsa.publicKey.pkcs1PEMRepresentation
        let token2 = try TokenMinter.mint(header: TokenMinter.header("HS256"), payload: Self.payload, signer: .hmac(Array(pkcs1.utf8)), algorithm: "HS256")
        #expect(throws: TokenFailure.self) { try JWTVerifier(keys: [try Self.rsaKey()]).verifyConnectionToken(token2, now: Self.now) }
    }

    @Test("a header alg that its key does not allow is refused, even with a valid signature for that alg")
    func mismatchedAlg() throws {
        // An HS256-only key: a correct HS512 MAC with the same secret is still refused.
        let token = try TokenMinter.mint(header: TokenMinter.header("HS512"), payload: Self.payload, signer: .hmac(TestKeys.secret), algorithm: "HS512")
        #expect(throws: TokenFailure.self) { try JWTVerifier(keys: [try Self.hmacKey()]).verifyConnectionToken(token, now: Self.now) }
        // ES384 header on a P-256 key.
        let es = try TokenMinter.mint(header: TokenMinter.header("ES384", kid: "e1"), payload: Self.payload, signer: .p256(TestKeys.p256), algorithm: "ES256")
        #expect(throws: TokenFailure.self) { try JWTVerifier(keys: [try Self.p256Key(kid: "e1")]).verifyConnectionToken(es, now: Self.now) }
        // RS256 header, ES256 signature on an RSA key.
        let rs = try TokenMinter.mint(header: TokenMinter.header("ES256"), payload: Self.payload, signer: .p256(TestKeys.p256), algorithm: "ES256")
        #expect(throws: TokenFailure.self) { try JWTVerifier(keys: [try Self.rsaKey()]).verifyConnectionToken(rs, now: Self.now) }
    }

    @Test("an all-zero ES256 signature is refused")
    func zeroSignature() throws {
        let token = try TokenMinter.mint(header: TokenMinter.header("ES256"), payload: Self.payload, signer: .raw([UInt8](repeating: 0, count: 64)), algorithm: "ES256")
        #expect(throws: TokenFailure.invalid("bad signature")) { try JWTVerifier(keys: [try Self.p256Key()]).verifyConnectionToken(token, now: Self.now) }
    }

    @Test("with several keys an unknown kid is refused, no fallback to another key")
    func unknownKid() throws {
        let verifier = JWTVerifier(keys: [try Self.hmacKey(kid: "h1"), try Self.rsaKey(kid: "r1")])
        let good = try TokenMinter.mint(header: TokenMinter.header("HS256", kid: "h1"), payload: Self.payload, signer: .hmac(TestKeys.secret), algorithm: "HS256")
        #expect(try verifier.verifyConnectionToken(good, now: Self.now).user == "alice")
        let unknown = try TokenMinter.mint(header: TokenMinter.header("HS256", kid: "h9"), payload: Self.payload, signer: .hmac(TestKeys.secret), algorithm: "HS256")
        #expect(throws: TokenFailure.invalid("unknown kid")) { try verifier.verifyConnectionToken(unknown, now: Self.now) }
        #expect(throws: JWTVerifier.Refusal.unknownKey("h9")) { try verifier.verifySignature(unknown) }
        // The kid picks the key: an HMAC token naming the RSA key's kid is refused.
        let crossed = try TokenMinter.mint(header: TokenMinter.header("HS256", kid: "r1"), payload: Self.payload, signer: .hmac(TestKeys.secret), algorithm: "HS256")
        #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(crossed, now: Self.now) }
    }

    @Test("rotation: two HMAC keys with kids, each token verified by its own")
    func rotation() throws {
        let other = Array("fedcba9876543210fedcba9876543210fedcba9876543210".utf8)
        let verifier = JWTVerifier(keys: [
            try Self.hmacKey(kid: "old"),
            try VerificationKey(hmacSecret: other, kid: "new", algorithms: [.hs256]),
        ])
        let old = try TokenMinter.mint(header: TokenMinter.header("HS256", kid: "old"), payload: Self.payload, signer: .hmac(TestKeys.secret), algorithm: "HS256")
        let new = try TokenMinter.mint(header: TokenMinter.header("HS256", kid: "new"), payload: Self.payload, signer: .hmac(other), algorithm: "HS256")
        let swapped = try TokenMinter.mint(header: TokenMinter.header("HS256", kid: "old"), payload: Self.payload, signer: .hmac(other), algorithm: "HS256")
        let noKid = try TokenMinter.mint(header: TokenMinter.header("HS256"), payload: Self.payload, signer: .hmac(other), algorithm: "HS256")
        #expect(try verifier.verifyConnectionToken(old, now: Self.now).user == "alice")
        #expect(try verifier.verifyConnectionToken(new, now: Self.now).user == "alice")
        #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(swapped, now: Self.now) }
        #expect(throws: TokenFailure.self) { try verifier.verifyConnectionToken(noKid, now: Self.now) }
    }

    @Test("tokens over the size cap are refused before decoding", arguments: [8193, 100_000, 1_048_576])
    func oversized(_ size: Int) throws {
        let verifier = JWTVerifier(keys: [try Self.hmacKey()])
        // Not even valid base64: the cap must answer first.
        let token = String(repeating: "!", count: size)
        #expect(throws: JWTVerifier.Refusal.invalid("longer than 8192 bytes")) { try verifier.verifySignature(token) }
        // A well-formed header and signature around a huge payload segment.
        let small = try TokenMinter.mint(header: TokenMinter.header("HS256"), payload: #"{"sub":"a"}"#, signer: .hmac(TestKeys.secret), algorithm: "HS256")
        let parts = small.split(separator: ".")
        let padded = parts[0] + "." + String(repeating: "e", count: size) + "." + parts[2]
        #expect(throws: JWTVerifier.Refusal.invalid("longer than 8192 bytes")) { try verifier.verifySignature(padded) }
    }

    @Test("malformed tokens are invalid", arguments: ["", ".", "..", "a.b", "a.b.c.d", "e30.e30.", "!!!.e30.AAAA", "e30.e30.AAAA"])
    func malformed(_ token: String) throws {
        #expect(throws: TokenFailure.self) { try JWTVerifier(keys: [try Self.hmacKey()]).verifyConnectionToken(token, now: Self.now) }
    }

    @Test("HMAC secrets shorter than the hash output are refused with a clear message")
    func shortSecrets() throws {
        #expect(throws: VerificationKey.Error.self) { try VerificationKey(hmacSecret: Array("s3cret".utf8), kid: "h1") }
        #expect(throws: VerificationKey.Error.self) { try VerificationKey(hmacSecret: [UInt8](repeating: 1, count: 47), algorithms: [.hs384]) }
        #expect(throws: VerificationKey.Error.self) { try VerificationKey(hmacSecret: [UInt8](repeating: 1, count: 63), algorithms: [.hs256, .hs512]) }
        #expect(throws: VerificationKey.Error.self) { try VerificationKey(hmacSecret: TestKeys.secret, algorithms: [.rs256]) }
        _ = try VerificationKey(hmacSecret: [UInt8](repeating: 1, count: 32))
        do {
            _ = try VerificationKey(hmacSecret: Array("tiny-secret-value".utf8), kid: "h1")
            Issue.record("a short secret was accepted")
        } catch {
            #expect(error.description.contains("at least 32"))
            #expect(!error.description.contains("tiny-secret-value"))
        }
    }

    @Test("the algorithms of a PEM key follow from the key")
    func pemFamilies() throws {
        #expect(try Self.rsaKey().algorithms == [.rs256, .rs384, .rs512])
        #expect(try Self.p256Key().algorithms == [.es256])
        #expect(try Self.p384Key().algorithms == [.es384])
        #expect(throws: VerificationKey.Error.self) { try VerificationKey(pem: TestKeys.p256.publicKey.pemRepresentation, algorithms: [.rs256], source: "x") }
        #expect(throws: VerificationKey.Error.self) { try VerificationKey(pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", source: "x") }
    }

    /// swift-crypto 3.12.3 freed the key object twice when a PEM was not an RSA key either (the last
    /// family tried): the second free wrote into freed memory, and when another thread had taken that
    /// memory meanwhile the process aborted (about one run of the suite in seven). 4.x frees once. Four
    /// at once refusing and reading keys made the old bug abort in two runs of three (measured as four
    /// tasks; they are now threads of their own, so that other tests' tasks are not held up meanwhile).
    @Test("a PEM of another kind (P-521, garbage) is refused with an error, thousands of times on four threads, and nothing is freed twice")
    func refusedPEMsFreeOnce() async throws {
        let p521 = P521.Signing.PrivateKey().publicKey.pemRepresentation
        let rsa = TestKeys.rsa.publicKey.pemRepresentation
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 4)
        let rounds = group.makeIterator().map { loop in
            loop.submit {
                var refused = 0
                for round in 0..<2000 {
                    let pem = round.isMultiple(of: 2) ? p521 : "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
                    if (try? VerificationKey(pem: pem, source: "key.pem")) == nil { refused += 1 }
                    _ = try? VerificationKey(pem: rsa, source: "rsa.pem")
                }
                return refused
            }
        }
        let refusals = try? await EventLoopFuture.whenAllSucceed(rounds, on: group.next()).get()
        try await group.shutdownGracefully()
        #expect(refusals == [2000, 2000, 2000, 2000])
        #expect(try Self.rsaKey().algorithms == [.rs256, .rs384, .rs512])
    }

    @Test("a subscription token is checked against the connection's user and the channel")
    func subscriptionToken() throws {
        let verifier = JWTVerifier(keys: [try Self.hmacKey()])
        let token = try TokenMinter.mint(header: TokenMinter.header("HS256"), payload: #"{"sub":"alice","channel":"$room:1","exp":1700000600}"#, signer: .hmac(TestKeys.secret), algorithm: "HS256")
        #expect(try verifier.verifySubscriptionToken(token, user: "alice", channel: "$room:1", now: Self.now).channel == "$room:1")
        #expect(throws: TokenFailure.invalid("sub does not match the connection's user")) {
            try verifier.verifySubscriptionToken(token, user: "bob", channel: "$room:1", now: Self.now)
        }
        #expect(throws: TokenFailure.invalid("channel does not match")) {
            try verifier.verifySubscriptionToken(token, user: "alice", channel: "$room:2", now: Self.now)
        }
        // The same token is no connection token.
        #expect(throws: TokenFailure.invalid("a connection token must not carry channel")) { try verifier.verifyConnectionToken(token, now: Self.now) }
    }
}
