#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardAuth
import SwitchboardCore
import Testing
import CryptoExtras

@Suite("JWKS")
struct JWKSTests {
    static func rsaJWK(kid: String, key: _RSA.Signing.PublicKey = TestKeys.rsa.publicKey, alg: String? = nil) -> String {
        let components = try! key.getKeyPrimitives()
        let alg = alg.map { #","alg":"\#($0)""# } ?? ""
        return #"{"kty":"RSA","kid":"\#(kid)","use":"sig","n":"\#(Base64URL.encode(Array(components.modulus)))","e":"\#(Base64URL.encode(Array(components.publicExponent)))"\#(alg)}"#
    }

    static func ecJWK(kid: String, key: P256.Signing.PublicKey = TestKeys.p256.publicKey) -> String {
        let raw = Array(key.rawRepresentation)
        return #"{"kty":"EC","crv":"P-256","kid":"\#(kid)","x":"\#(Base64URL.encode(Array(raw[0..<32])))","y":"\#(Base64URL.encode(Array(raw[32..<64])))"}"#
    }

    @Test("RSA and EC keys are read; odd keys are skipped, not fatal")
    func parse() throws {
        let encryption = Self.rsaJWK(kid: "enc").replacingOccurrences(of: #""use":"sig""#, with: #""use":"enc""#)
        let odd = [#"{"kty":"oct","kid":"h","k":"AAAA"}"#, #"{"kty":"RSA","kid":"x","n":"AQAB","e":"AQAB"}"#, #"{"kty":"EC","crv":"P-256","x":"AA"}"#, encryption]
        let document = #"{"keys":[\#(Self.rsaJWK(kid: "r1")),\#(Self.ecJWK(kid: "e1")),\#(odd.joined(separator: ","))]}"#
        let keys = try JSONWebKeySet.parse(Array(document.utf8), source: "test")
        #expect(keys.map(\.kid) == ["r1", "e1"])
        #expect(keys.first?.family == .rsa)
        #expect(keys.dropFirst().first?.family == .p256)
        #expect(keys.allSatisfy { $0.source == "jwks:test" })
        #expect(throws: JSONWebKeySet.Error.self) { try JSONWebKeySet.parse(Array("[1,2]".utf8), source: "test") }
    }

    @Test("junk entries before the good keys do not hide them; a set with no usable key is an error (the last good set stays), not an empty set")
    func junkAndEmptySets() throws {
        let junk = Array(repeating: #"{"kty":"oct","kid":"h","k":"AAAA"}"#, count: 100).joined(separator: ",")
        let keys = try JSONWebKeySet.parse(Array(#"{"keys":[\#(junk),\#(Self.ecJWK(kid: "e1"))]}"#.utf8), source: "t")
        #expect(keys.map(\.kid) == ["e1"])
        for empty in [#"{"keys":[]}"#, #"{"keys":[\#(junk)]}"#] {
            #expect(throws: JSONWebKeySet.Error.self) { try JSONWebKeySet.parse(Array(empty.utf8), source: "t") }
        }
    }

    @Test("a key's alg narrows it; an alg of the wrong family drops the key")
    func algNarrowing() throws {
        let keys = try JSONWebKeySet.parse(Array(#"{"keys":[\#(Self.rsaJWK(kid: "a", alg: "RS384")),\#(Self.rsaJWK(kid: "b", alg: "ES256"))]}"#.utf8), source: "t")
        #expect(keys.count == 1)
        #expect(keys.first?.algorithms == [.rs384])
    }

    @Test("tokens verify against JWKS keys passed as extra keys; an unknown kid asks for a fetch")
    func verifyWithJWKS() throws {
        let keys = try JSONWebKeySet.parse(Array(#"{"keys":[\#(Self.rsaJWK(kid: "r1")),\#(Self.ecJWK(kid: "e1"))]}"#.utf8), source: "t")
        let verifier = JWTVerifier(keys: [])
        let payload = #"{"sub":"alice"}"#
        let rs = try TokenMinter.mint(header: TokenMinter.header("RS256", kid: "r1"), payload: payload, signer: .rsa(TestKeys.rsa), algorithm: "RS256")
        let es = try TokenMinter.mint(header: TokenMinter.header("ES256", kid: "e1"), payload: payload, signer: .p256(TestKeys.p256), algorithm: "ES256")
        let unknown = try TokenMinter.mint(header: TokenMinter.header("ES256", kid: "e2"), payload: payload, signer: .p256(TestKeys.p256), algorithm: "ES256")
        #expect(try verifier.verifyConnectionToken(rs, now: 0, extraKeys: keys).user == "alice")
        #expect(try verifier.verifyConnectionToken(es, now: 0, extraKeys: keys).user == "alice")
        #expect(throws: JWTVerifier.Refusal.unknownKey("e2")) { try verifier.verifySignature(unknown, extraKeys: keys) }
        // Whether a refused token is worth a fetch is read from its header alone: a forged signature
        // under a known kid is not (and is not verified a second time to find out).
        let forged = String(rs.dropLast(4)) + "AAAA"
        #expect(verifier.namesUnknownKey(unknown, extraKeys: keys))
        #expect(!verifier.namesUnknownKey(forged, extraKeys: keys))
        #expect(!verifier.namesUnknownKey(rs, extraKeys: keys))
        #expect(!verifier.namesUnknownKey("no dots at all", extraKeys: keys))
        #expect(!verifier.namesUnknownKey(String(repeating: "a", count: 9000) + ".b.c", extraKeys: keys))
    }

    @Test("an RSA key over 4,096 bits in a set is skipped (each token naming it would cost several times the CPU)")
    func oversizeRSAKeysAreSkipped() throws {
        // An odd 6,144-bit number: a public key BoringSSL takes (it does not factor moduli).
        var modulus = [UInt8](repeating: 0xA7, count: 768)
        modulus[0] = 0xC3
        modulus[767] = 0x01
        let big = #"{"kty":"RSA","kid":"big","n":"\#(Base64URL.encode(modulus))","e":"AQAB"}"#
        #expect((try? _RSA.Signing.PublicKey(n: modulus, e: [1, 0, 1]))?.keySizeInBits == 6144)
        let keys = try JSONWebKeySet.parse(Array(#"{"keys":[\#(big),\#(Self.rsaJWK(kid: "r1"))]}"#.utf8), source: "t")
        #expect(keys.map(\.kid) == ["r1"])
    }

    @Test("fetch timing: unknown kid at most once per 30 s, refresh every 5 min, last good set kept")
    func cacheTiming() throws {
        let s: UInt64 = 1_000_000_000
        var cache = JWKSCache()
        var started: [Bool] = []
        started.append(cache.beginScheduledRefresh(now: 0))
        started.append(cache.beginFetchForUnknownKid(now: 1 * s))  // one at a time
        let keys = try JSONWebKeySet.parse(Array(#"{"keys":[\#(Self.ecJWK(kid: "e1"))]}"#.utf8), source: "t")
        cache.fetchSucceeded(keys, now: 1 * s)
        started.append(cache.beginFetchForUnknownKid(now: 2 * s))
        cache.fetchFailed(now: 3 * s)
        started.append(cache.beginFetchForUnknownKid(now: 31 * s))
        #expect(cache.keys.count == 1)  // the last good set is kept
        #expect(cache.consecutiveFailures == 1)
        started.append(cache.beginScheduledRefresh(now: 200 * s))
        started.append(cache.beginScheduledRefresh(now: 301 * s))
        started.append(cache.beginScheduledRefresh(now: 303 * s))
        cache.fetchSucceeded([], now: 331 * s)
        #expect(cache.keys.isEmpty)
        // The start-up fetch does not hold back the first unknown kid; later ones wait 30 s.
        #expect(started == [true, false, true, false, false, false, true])
    }

    @Test("only http(s) URLs without credentials are accepted", arguments: [
        ("https://auth.example/jwks.json", true), ("http://127.0.0.1:8080/.well-known/jwks.json", true),
        ("http://[::1]:9000/k", true), ("file:///etc/passwd", false), ("gopher://x/", false),
        ("https://user:pw@auth.example/", false), ("https://:443/", false), ("https://auth.example:99999/", false), ("auth.example/jwks", false),
    ])
    func urls(_ url: String, _ ok: Bool) {
        #expect(((try? JWKSFetcher(url: url)) != nil) == ok)
    }

    // Both tests below check which failure the fetch gives, not how long it took: on a loaded
    // machine a whole test process can stall for seconds, so a wall-clock bound would only flake.
    @Test("a fetch against a closed port fails as refused, without waiting for the deadline")
    func fetchAgainstAClosedPortIsRefused() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // A port bound but not listening: connects to it are refused, and while it is held nothing
        // else (a test running alongside) can take it, as it could a port bound and closed again.
        let held = try Self.boundNotListening()
        defer { close(held.descriptor) }
        let port = held.port
        // A deadline far beyond any test: the failure must come from the refused connect.
        let fetcher = try JWKSFetcher(url: "http://127.0.0.1:\(port)/jwks.json", timeout: .seconds(600))
        let error = await #expect(throws: JWKSFetcher.Error.self) { try await fetcher.fetch(on: group.next()).get() }
        #expect(error?.description.contains("cannot connect") == true)
        try await group.shutdownGracefully()
    }

    /// A TCP socket bound to a free loopback port, never listening.
    static func boundNotListening() throws -> (descriptor: Int32, port: Int) {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0 }
        }
        guard bound else {
            close(descriptor)
            throw IOError(errnoCode: errno, reason: "bind")
        }
        return (descriptor, Int(UInt16(bigEndian: address.sin_port)))
    }

    @Test("a server that accepts and never answers is given up at the fetch deadline", .timeLimit(.minutes(1)))
    func fetchFromASilentServerTimesOut() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // Accepts connections and reads nothing back: the fetch can only end by its own deadline.
        let silent = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let fetcher = try JWKSFetcher(url: "http://127.0.0.1:\(silent.localAddress!.port!)/jwks.json", timeout: .milliseconds(200))
        let started = ContinuousClock.now
        let error = await #expect(throws: JWKSFetcher.Error.self) { try await fetcher.fetch(on: group.next()).get() }
        #expect(error?.description == "JWKS fetch timed out")
        // Never before the deadline (a lower bound holds however loaded the machine is).
        #expect(ContinuousClock.now - started >= .milliseconds(200))
        try await silent.close()
        try await group.shutdownGracefully()
    }

    @Test("stop hands back the JWKS fetch under way, which the node waits for before shutting its loops; no fetch starts after stop", .timeLimit(.minutes(1)))
    func stopHandsBackTheFetchUnderWay() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        // Accepts and never answers: a fetch ends only at its 2 s deadline, a timer on the loop.
        let accepted = NIOLockedValueBox(0)
        let silent = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        var settings = TokenSettings()
        settings.jwks = .url("http://127.0.0.1:\(silent.localAddress!.port!)/jwks.json")
        // One key known (with none, no kid is "unknown": nothing could verify anything yet).
        settings.hmac = [.init(kid: "h1", secret: String(decoding: TestKeys.secret, as: UTF8.self))]
        let payload = #"{"sub":"alice"}"#
        let unknown = try TokenMinter.mint(header: TokenMinter.header("ES256", kid: "e9"), payload: payload, signer: .p256(TestKeys.p256), algorithm: "ES256")

        // A token naming an unknown kid waits for a fetch; stop hands that fetch back.
        let authority = try TokenAuthority(settings: settings, logger: Logger(label: "test"))
        let waiting = authority.verifyConnectionToken(unknown, on: loop)
        let underWay = try #require(authority.stop())
        try? await underWay.get()
        // Once it has ended, the verification waiting for it has its answer (no key was fetched).
        await #expect(throws: TokenFailure.self) { try await waiting.get() }
        #expect(accepted.withLockedValue { $0 } == 1)

        // Stopped before any fetch: an unknown kid is refused at once, with no fetch behind it.
        let stopped = try TokenAuthority(settings: settings, logger: Logger(label: "test"))
        #expect(stopped.stop() == nil)
        await #expect(throws: TokenFailure.self) { try await stopped.verifyConnectionToken(unknown, on: loop).get() }
        #expect(accepted.withLockedValue { $0 } == 1)
        try await silent.close()
        try await group.shutdownGracefully()
    }

    @Test("TokenAuthority: a JWKS file, a legacy secret and HMAC keys together")
    func authorityFromFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sb-auth-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let jwks = dir.appendingPathComponent("jwks.json")
        try Data(#"{"keys":[\#(Self.ecJWK(kid: "e1"))]}"#.utf8).write(to: jwks)
        let pem = dir.appendingPathComponent("rsa.pem")
        try Data(TestKeys.rsa.publicKey.pemRepresentation.utf8).write(to: pem)
        var settings = TokenSettings()
        settings.jwks = .file(jwks.path)
        settings.publicKeys = [.init(kid: "r1", file: pem.path)]
        settings.hmac = [.init(kid: "h1", secret: String(decoding: TestKeys.secret, as: UTF8.self))]
        let authority = try TokenAuthority(settings: settings, logger: Logger(label: "test"))
        #expect(authority.hasKeys)
        let now = Date().timeIntervalSince1970
        let payload = #"{"sub":"alice","exp":\#(Int(now) + 60)}"#
        let es = try TokenMinter.mint(header: TokenMinter.header("ES256", kid: "e1"), payload: payload, signer: .p256(TestKeys.p256), algorithm: "ES256")
        let rs = try TokenMinter.mint(header: TokenMinter.header("RS512", kid: "r1"), payload: payload, signer: .rsa(TestKeys.rsa), algorithm: "RS512")
        let hs = try TokenMinter.mint(header: TokenMinter.header("HS256", kid: "h1"), payload: payload, signer: .hmac(TestKeys.secret), algorithm: "HS256")
        #expect(try authority.verifyConnectionToken(es).get().user == "alice")
        #expect(try authority.verifyConnectionToken(rs).get().user == "alice")
        #expect(try authority.verifyConnectionToken(hs).get().user == "alice")

        // A short legacy secret is a startup error that names no secret.
        #expect(throws: TokenSettings.Error.self) { try TokenAuthority(settings: TokenSettings(), legacySecret: "s3cret", logger: Logger(label: "test")) }
        // Two keys with one kid are refused.
        var twice = settings
        twice.hmac.append(.init(kid: "r1", secret: String(decoding: TestKeys.secret, as: UTF8.self)))
        #expect(throws: TokenSettings.Error.self) { try TokenAuthority(settings: twice, logger: Logger(label: "test")) }
        // No keys at all: dev mode.
        #expect(try !TokenAuthority(settings: TokenSettings(), logger: Logger(label: "test")).hasKeys)
    }

    @Test("the tokens config object is read with its exact names; secrets never show in descriptions")
    func settingsShape() throws {
        let json = #"""
        {"hmac":[{"kid":"h1","secret":"0123456789abcdef0123456789abcdef","algorithms":["HS256","HS512"]}],
         "publicKeys":[{"kid":"r1","file":"rsa.pub.pem"}],"jwks":{"url":"https://auth.example/jwks.json"},
         "audience":"switchboard","issuer":"auth.example","leeway":5,"refreshGrace":25,"maxTokenBytes":8192}
        """#
        let settings = try TokenSettings(json: try JSONParser().parse(Array(json.utf8)), baseDirectory: "/etc/sb")
        #expect(settings.hmac.first?.algorithms == [.hs256, .hs512])
        #expect(settings.publicKeys.first?.file == "/etc/sb/rsa.pub.pem")
        #expect(settings.jwks == .url("https://auth.example/jwks.json"))
        #expect(settings.audience == "switchboard" && settings.issuer == "auth.example")
        #expect(!settings.description.contains("0123456789abcdef"))
        for bad in [#"{"leeway":61}"#, #"{"hmac":[{"kid":"x"}]}"#, #"{"hmac":[{"secret":"x","algorithms":["none"]}]}"#, #"{"jwks":{}}"#, #"{"bogus":1}"#, #"{"maxTokenBytes":1e9}"#] {
            #expect(throws: TokenSettings.Error.self) { try TokenSettings(json: try JSONParser().parse(Array(bad.utf8))) }
        }
    }
}
