import Crypto
import SwitchboardAuth
import SwitchboardCore

/// Token verification on hostile input: the JWT verifier (segments, base64url, header, key choice,
/// signature) and the claim rules of core behind it, and the JWK Set reader.
///
/// The first byte picks what the rest is:
/// - `0`: a token as sent (`connect.token`, `subscribe.token`, `Authorization: Bearer`);
/// - `1`, `2`, `3`: a header and a payload (JSON, split at the first NUL), which the harness encodes
///   and signs with the HS256, HS384 or ES256 key the verifier trusts, so that fuzzed claims get past
///   the signature and reach the claim rules (a fuzzer cannot forge a MAC);
/// - anything else: a JWK Set document.
///
/// Checked beyond "no crash": a verifier with a verified-token cache answers exactly as one without,
/// the second time as the first (the cache must never turn a refusal into an admission, or change
/// the claims); admitted claims respect every cap (`sub`, `jti` and channel names, `info` and `meta`,
/// the number of server-side channels), deadlines are finite, a subscription token admits only
/// the requested user and channel, and a connection token never carries `channel`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    guard let mode = bytes.first else { return 0 }
    let rest = Array(bytes.dropFirst())
    switch mode {
    case 0:
        check(token: String(decoding: rest, as: UTF8.self))
    case 1, 2, 3:
        let split = rest.firstIndex(of: 0) ?? rest.endIndex
        let header = Array(rest[..<split])
        let payload = split < rest.endIndex ? Array(rest[(split + 1)...]) : []
        check(token: signed(header: header, payload: payload, mode: mode))
    default:
        checkKeySet(rest)
    }
    return 0
}

/// What every check compares: the answer of a verifier, cached or not.
enum Answer: Hashable {
    case connection(ConnectionTokenClaims)
    case subscription(SubscriptionTokenClaims)
    case refused(TokenFailure)
}

let now = 1_800_000_000.0
let hmacSecret256 = [UInt8](repeating: 0x5A, count: 32)
let hmacSecret384 = [UInt8](repeating: 0xA5, count: 64)
// A test key pair in PEM. (Deriving the public key with `PrivateKey.publicKey` leaks its wrapper in
// swift-crypto 4.5.2 under LeakSanitizer; the node never does that, it only reads public keys.)
let ecPrivateKey = try! P256.Signing.PrivateKey(
    pemRepresentation: """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgbNR2A/gh811O002p
        LeFibq6ZqDgmyV+ugvyxe5bYf0uhRANCAAS4zTTv3FICUoqUHRr9mhhK+jj5z9iy
        rb0oOoKVA83ovRittcTMcyVzgj74Wka4Ymp5ZgJFk0JXuRHeVj+E5t0p
        -----END PRIVATE KEY-----
        """)
let ecPublicKeyPEM = """
    -----BEGIN PUBLIC KEY-----
    MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEuM0079xSAlKKlB0a/ZoYSvo4+c/Y
    sq29KDqClQPN6L0YrbXEzHMlc4I++FpGuGJqeWYCRZNCV7kR3lY/hObdKQ==
    -----END PUBLIC KEY-----
    """
let policy = TokenClaimPolicy(leeway: 5, audience: "switchboard", issuer: "auth.example")

/// The keys and both verifiers are made for each input and gone at its end: LeakSanitizer cannot
/// follow a reference stored in a Swift enum's payload with the case in the pointer's spare bits
/// (`VerificationKey.Material`, `JSONValue`), so anything of that shape kept across inputs in a
/// global reads as a leak.
struct Verifiers {
    var plain: JWTVerifier
    var cached: JWTVerifier

    init() {
        let keys = [
            try! VerificationKey(hmacSecret: hmacSecret256, kid: "h1", algorithms: [.hs256]),
            try! VerificationKey(hmacSecret: hmacSecret384, kid: "h2", algorithms: [.hs384, .hs512]),
            try! VerificationKey(pem: ecPublicKeyPEM, kid: "e1", source: "fuzz"),
        ]
        self.plain = JWTVerifier(keys: keys, policy: policy)
        self.cached = JWTVerifier(keys: keys, policy: policy, cache: VerifiedTokenCache())
    }
}

func signed(header: [UInt8], payload: [UInt8], mode: UInt8) -> String {
    let signingInput = encode(header) + "." + encode(payload)
    let signature: [UInt8]
    switch mode {
    case 1: signature = Array(HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: SymmetricKey(data: hmacSecret256)))
    case 2: signature = Array(HMAC<SHA384>.authenticationCode(for: Array(signingInput.utf8), using: SymmetricKey(data: hmacSecret384)))
    default: signature = Array(try! ecPrivateKey.signature(for: Array(signingInput.utf8)).rawRepresentation)
    }
    return signingInput + "." + encode(signature)
}

func encode(_ bytes: [UInt8]) -> String {
    var text = Base64URL.encode(bytes)
    while text.hasSuffix("=") { text.removeLast() }
    return text
}

func connection(_ verifier: JWTVerifier, _ token: String) -> Answer {
    do {
        return .connection(try verifier.verifyConnectionToken(token, now: now))
    } catch {
        return .refused(error)
    }
}

func subscription(_ verifier: JWTVerifier, _ token: String, user: String, channel: String) -> Answer {
    do {
        return .subscription(try verifier.verifySubscriptionToken(token, user: user, channel: channel, now: now))
    } catch {
        return .refused(error)
    }
}

func check(token: String) {
    let verifiers = Verifiers()
    let plain = connection(verifiers.plain, token)
    for attempt in 0..<2 {
        let cached = connection(verifiers.cached, token)
        guard cached == plain else { fatalError("connection token: cached answer \(cached) (attempt \(attempt)) differs from \(plain)") }
    }
    if case .connection(let claims) = plain { checkCaps(claims) }
    // The user the subscription is asked for: the one the token's connection would have, or another.
    let user: String
    if case .connection(let claims) = plain { user = claims.user } else { user = "alice" }
    for channel in ["chat:lobby", "$private:1"] {
        let plain = subscription(verifiers.plain, token, user: user, channel: channel)
        let cached = subscription(verifiers.cached, token, user: user, channel: channel)
        guard cached == plain else { fatalError("subscription token: cached answer \(cached) differs from \(plain)") }
        if case .subscription(let claims) = plain {
            guard claims.user == user, claims.channel == channel else {
                fatalError("a subscription token for \(user)/\(channel) admitted \(claims.user)/\(claims.channel)")
            }
            checkDeadline(claims.expiresAt)
            if let info = claims.info, info.jsonString.utf8.count > policy.maximumInfoBytes { fatalError("info over the cap") }
        }
    }
}

func checkCaps(_ claims: ConnectionTokenClaims) {
    guard claims.user.utf8.count <= TokenClaimPolicy.maximumStringClaimBytes else { fatalError("sub over the cap") }
    if let jti = claims.tokenID, jti.utf8.count > TokenClaimPolicy.maximumStringClaimBytes { fatalError("jti over the cap") }
    if let info = claims.info, info.jsonString.utf8.count > policy.maximumInfoBytes { fatalError("info over the cap") }
    if let meta = claims.meta, meta.jsonString.utf8.count > policy.maximumInfoBytes { fatalError("meta over the cap") }
    guard claims.channels.count <= TokenClaimPolicy.maximumChannels else { fatalError("too many channels") }
    for channel in claims.channels where (try? ChannelName.validate(channel)) == nil { fatalError("invalid channel \(channel)") }
    checkDeadline(claims.expiresAt)
}

func checkDeadline(_ deadline: Double?) {
    if let deadline, !deadline.isFinite || deadline <= now - policy.leeway { fatalError("deadline \(deadline) admitted at \(now)") }
}

func checkKeySet(_ document: [UInt8]) {
    guard let keys = try? JSONWebKeySet.parse(document, source: "fuzz") else { return }
    guard keys.count <= JSONWebKeySet.maximumKeys else { fatalError("\(keys.count) keys read from one set") }
    for key in keys {
        guard let kid = key.kid, !kid.isEmpty, kid.utf8.count <= 256 else { fatalError("a key without a bounded kid") }
        guard !key.algorithms.isEmpty, key.algorithms.allSatisfy({ $0.family != .hmac }) else {
            fatalError("a JWK Set yielded a key for \(key.algorithms)")
        }
    }
    // A set's keys verify tokens: a token naming one of them must be answered, not crash.
    let verifier = JWTVerifier(keys: [], policy: policy)
    for key in keys.prefix(4) {
        for algorithm in key.algorithms {
            let header = #"{"alg":"\#(algorithm.rawValue)","kid":\#(JSONValue.string(key.kid ?? "").jsonString)}"#
            let token = encode(Array(header.utf8)) + "." + encode(Array(#"{"sub":"u"}"#.utf8)) + "." + encode([UInt8](repeating: 1, count: 64))
            if (try? verifier.verifyConnectionToken(token, now: now, extraKeys: keys)) != nil {
                fatalError("a token with a made-up signature verified against a JWK Set key")
            }
        }
    }
}
