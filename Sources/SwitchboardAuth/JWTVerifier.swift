public import SwitchboardCore

/// Verifies compact JWS tokens synchronously (on the calling event loop, no Task per token) against
/// a fixed list of keys, and applies the claim rules of core.
///
/// The order is chosen so that a hostile token costs as little as possible:
/// size cap before any decoding, header before payload, signature before any claim is read.
/// - tokens over `maximumTokenBytes` are refused before base64 or JSON work;
/// - the header `alg` must be one the chosen key allows (`none` never is: it is not a `JWTAlgorithm`);
/// - with a `kid`, only keys with that `kid` are tried; with several keys and no match, the token is
///   refused (no fallback to a default key); without a `kid`, the one key allowing the algorithm is
///   used, and several such keys refuse the token (rotation needs `kid`s);
/// - a lone key without a `kid` accepts tokens whatever `kid` they carry.
public struct JWTVerifier: Sendable {
    /// A token whose signature verified: what its header and payload said.
    public struct Verified: Sendable {
        public var algorithm: JWTAlgorithm
        public var kid: String?
        public var payload: JSONValue
    }

    /// Why a token could not be verified before any claim was read.
    public enum Refusal: Error, Hashable, Sendable {
        /// Malformed, oversized, wrong algorithm, bad signature.
        case invalid(String)
        /// The header names a `kid` no key has (a JWKS may learn it on a fetch).
        case unknownKey(String)
    }

    public let keys: [VerificationKey]
    public let policy: TokenClaimPolicy
    /// Longest token accepted, in bytes (default 8192).
    public let maximumTokenBytes: Int
    /// Recently verified tokens (nil: every token is verified in full). See ``VerifiedTokenCache``.
    public let cache: VerifiedTokenCache?

    public static let defaultMaximumTokenBytes = 8192

    public init(
        keys: [VerificationKey],
        policy: TokenClaimPolicy = TokenClaimPolicy(),
        maximumTokenBytes: Int = Self.defaultMaximumTokenBytes,
        cache: VerifiedTokenCache? = nil
    ) {
        self.keys = keys
        self.policy = policy
        self.maximumTokenBytes = max(64, maximumTokenBytes)
        self.cache = cache
    }

    private static let headerParser = JSONParser(maximumDepth: 4, maximumValues: 64)
    private static let payloadParser = JSONParser(maximumDepth: 32, maximumValues: 4096)

    /// Checks size, shape, header and signature against `keys` plus `extraKeys` (a JWKS's current set).
    public func verifySignature(_ token: String, extraKeys: [VerificationKey] = []) throws(Refusal) -> Verified {
        let utf8 = token.utf8
        guard utf8.count <= self.maximumTokenBytes else { throw .invalid("longer than \(self.maximumTokenBytes) bytes") }
        // The same text verified before, by the key its header still picks: the signature holds.
        if let cache = self.cache, let hit = cache.entry(for: token),
            let key = try? self.pickKey(kid: hit.verified.kid, algorithm: hit.verified.algorithm, extraKeys: extraKeys),
            key.fingerprint == hit.keyFingerprint
        {
            return hit.verified
        }
        let result: Result<(Verified, VerificationKey), Refusal>
        if let contiguous = token.utf8.withContiguousStorageIfAvailable({ self.verify($0, extraKeys: extraKeys) }) {
            result = contiguous
        } else {
            result = Array(token.utf8).withUnsafeBufferPointer { self.verify($0, extraKeys: extraKeys) }
        }
        let (verified, key) = try result.get()
        self.cache?.store(.init(verified: verified, keyFingerprint: key.fingerprint), for: token)
        return verified
    }

    /// Verifies the token's UTF-8 bytes in place: segments are decoded from slices of `token` and
    /// the signature covers a slice of it, with no copy of the text.
    private func verify(_ token: UnsafeBufferPointer<UInt8>, extraKeys: [VerificationKey]) -> Result<(Verified, VerificationKey), Refusal> {
        var firstDot = -1
        var secondDot = -1
        for index in 0..<token.count where token[index] == UInt8(ascii: ".") {
            if firstDot < 0 {
                firstDot = index
            } else if secondDot < 0 {
                secondDot = index
            } else {
                return .failure(.invalid("not three segments"))
            }
        }
        guard secondDot >= 0 else { return .failure(.invalid("not three segments")) }
        let headerText = UnsafeBufferPointer(rebasing: token[..<firstDot])
        let payloadText = UnsafeBufferPointer(rebasing: token[(firstDot + 1)..<secondDot])
        let signatureText = UnsafeBufferPointer(rebasing: token[(secondDot + 1)...])
        let algorithm: JWTAlgorithm
        let kid: String?
        switch Self.parseHeader(headerText) {
        case .success(let header): (algorithm, kid) = header
        case .failure(let refusal): return .failure(refusal)
        }
        let key: VerificationKey
        do {
            key = try self.pickKey(kid: kid, algorithm: algorithm, extraKeys: extraKeys)
        } catch {
            return .failure(error)
        }
        guard let signature = Base64URL.decode(signatureText), !signature.isEmpty else { return .failure(.invalid("signature is not base64url")) }
        let signingInput = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(token)[..<secondDot])
        guard key.isValidSignature(signature, of: signingInput, algorithm: algorithm) else { return .failure(.invalid("bad signature")) }
        guard let payloadBytes = Base64URL.decode(payloadText), UTF8Validation.isValid(payloadBytes),
            let payload = try? Self.payloadParser.parse(payloadBytes)
        else { return .failure(.invalid("payload is not base64url JSON")) }
        return .success((Verified(algorithm: algorithm, kid: kid, payload: payload), key))
    }

    /// The algorithm and `kid` of a token's header segment.
    private static func parseHeader(_ headerText: UnsafeBufferPointer<UInt8>) -> Result<(JWTAlgorithm, String?), Refusal> {
        guard let headerBytes = Base64URL.decode(headerText), UTF8Validation.isValid(headerBytes),
            let header = try? Self.headerParser.parse(headerBytes), case .object(let headerObject) = header
        else { return .failure(.invalid("header is not base64url JSON")) }
        guard let algName = headerObject["alg"]?.stringValue, let algorithm = JWTAlgorithm(header: algName) else {
            return .failure(.invalid("alg is missing or not supported"))
        }
        if let crit = headerObject["crit"], crit != .null { return .failure(.invalid("crit extensions are not supported")) }
        switch headerObject["kid"] {
        case nil, .null?: return .success((algorithm, nil))
        case .string(let s)? where s.utf8.count <= 256: return .success((algorithm, s))
        default: return .failure(.invalid("kid is not a string"))
        }
    }

    /// Whether the token's header names a `kid` no key has (so a JWKS fetch could help). Reads the
    /// header only: a token refused for any other reason is not verified a second time to find out.
    public func namesUnknownKey(_ token: String, extraKeys: [VerificationKey] = []) -> Bool {
        let utf8 = token.utf8
        guard utf8.count <= self.maximumTokenBytes else { return false }
        let header = Array(utf8.prefix { $0 != UInt8(ascii: ".") })
        guard header.count < utf8.count, case .success(let (algorithm, kid)) = header.withUnsafeBufferPointer(Self.parseHeader)
        else { return false }
        do {
            _ = try self.pickKey(kid: kid, algorithm: algorithm, extraKeys: extraKeys)
            return false
        } catch {
            if case .unknownKey = error { return true }
            return false
        }
    }

    /// The key a header picks; see the type's documentation for the rules.
    func pickKey(kid: String?, algorithm: JWTAlgorithm, extraKeys: [VerificationKey]) throws(Refusal) -> VerificationKey {
        let total = self.keys.count + extraKeys.count
        guard total > 0 else { throw .invalid("no key configured") }
        if let kid {
            var match: VerificationKey?
            for key in self.keys where key.kid == kid {
                match = key
                break
            }
            if match == nil {
                for key in extraKeys where key.kid == kid {
                    match = key
                    break
                }
            }
            if let match {
                guard match.algorithms.contains(algorithm) else { throw .invalid("alg \(algorithm.rawValue) is not allowed for key \(kid)") }
                return match
            }
            if total == 1, let only = self.keys.first ?? extraKeys.first, only.kid == nil {
                guard only.algorithms.contains(algorithm) else { throw .invalid("alg \(algorithm.rawValue) is not allowed for the key") }
                return only
            }
            throw .unknownKey(kid)
        }
        var candidate: VerificationKey?
        for key in self.keys + extraKeys where key.algorithms.contains(algorithm) {
            guard candidate == nil else { throw .invalid("no kid, and several keys allow \(algorithm.rawValue)") }
            candidate = key
        }
        guard let candidate else { throw .invalid("alg \(algorithm.rawValue) is not allowed for any key") }
        return candidate
    }

    /// Verifies a connection token and reads its claims at `now` (seconds since 1970).
    public func verifyConnectionToken(_ token: String, now: Double, extraKeys: [VerificationKey] = []) throws(TokenFailure) -> ConnectionTokenClaims {
        let verified: Verified
        do {
            verified = try self.verifySignature(token, extraKeys: extraKeys)
        } catch {
            throw error.asFailure
        }
        return try ConnectionTokenClaims(payload: verified.payload, now: now, policy: self.policy)
    }

    /// Verifies a subscription token of `user` for `channel` and reads its claims at `now`.
    public func verifySubscriptionToken(
        _ token: String,
        user: String,
        channel: String,
        now: Double,
        extraKeys: [VerificationKey] = []
    ) throws(TokenFailure) -> SubscriptionTokenClaims {
        let verified: Verified
        do {
            verified = try self.verifySignature(token, extraKeys: extraKeys)
        } catch {
            throw error.asFailure
        }
        return try SubscriptionTokenClaims(payload: verified.payload, user: user, channel: channel, now: now, policy: self.policy)
    }
}

extension JWTVerifier.Refusal {
    /// The claim-level failure a refusal amounts to.
    public var asFailure: TokenFailure {
        switch self {
        case .invalid(let reason): .invalid(reason)
        case .unknownKey: .invalid("unknown kid")
        }
    }
}
