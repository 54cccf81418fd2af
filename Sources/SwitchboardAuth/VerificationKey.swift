public import Crypto
public import CryptoExtras

/// One key a token may be signed with: its material, its `kid` (optional), where it came from
/// (so a JWKS's `kid` never matches a configured key's by accident), and the algorithms it allows,
/// all of one family.
public struct VerificationKey: Sendable {
    /// The key material; the family follows from it.
    public enum Material: Sendable {
        case hmac(SymmetricKey)
        case rsa(_RSA.Signing.PublicKey)
        case p256(P256.Signing.PublicKey)
        case p384(P384.Signing.PublicKey)
    }

    /// Why a key could not be built.
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public let material: Material
    /// The `kid` a token names to pick this key; nil: the key has none.
    public let kid: String?
    /// Where the key came from (`hmac`, `pem:<file>`, `jwks:<source>`), part of its identity.
    public let source: String
    /// The algorithms a token's header may name for this key; never empty, all of the key's family.
    public let algorithms: Set<JWTAlgorithm>
    /// SHA-256 of the key material: two keys with one fingerprint verify the same signatures. A
    /// cached verification is reused only while the key it was made with is still the one picked.
    public let fingerprint: [UInt8]
    /// For an HMAC key: the hash states with the key already absorbed (RFC 2104's inner and outer
    /// pads), so that verifying a token hashes the token only, not the key again.
    private let keyedHMACs: KeyedHMACs?

    private struct KeyedHMACs: Sendable {
        var sha256: HMAC<SHA256>
        var sha384: HMAC<SHA384>
        var sha512: HMAC<SHA512>

        init?(_ material: Material) {
            guard case .hmac(let key) = material else { return nil }
            self.sha256 = HMAC(key: key)
            self.sha384 = HMAC(key: key)
            self.sha512 = HMAC(key: key)
        }
    }

    /// Shortest RSA modulus accepted, in bits.
    public static let minimumRSABits = 2048

    public var family: JWTAlgorithm.Family {
        switch self.material {
        case .hmac: .hmac
        case .rsa: .rsa
        case .p256: .p256
        case .p384: .p384
        }
    }

    /// An HMAC secret. Refused when shorter than the hash output of any algorithm it allows
    /// (32 bytes for HS256, 48 for HS384, 64 for HS512), or when an algorithm is not HMAC.
    public init(hmacSecret secret: [UInt8], kid: String? = nil, algorithms: [JWTAlgorithm] = [.hs256], source: String = "hmac") throws(Error) {
        guard !algorithms.isEmpty else { throw Error("HMAC key \(kid ?? "(no kid)"): algorithms is empty") }
        for algorithm in algorithms {
            guard algorithm.family == .hmac else {
                throw Error("HMAC key \(kid ?? "(no kid)"): \(algorithm.rawValue) is not an HMAC algorithm (HS256, HS384, HS512)")
            }
            guard secret.count >= algorithm.minimumSecretBytes else {
                throw Error(
                    "HMAC key \(kid ?? "(no kid)"): the secret is \(secret.count) bytes, \(algorithm.rawValue) needs at least \(algorithm.minimumSecretBytes) "
                        + "(generate one with: openssl rand -base64 \(algorithm.minimumSecretBytes))"
                )
            }
        }
        self.material = .hmac(SymmetricKey(data: secret))
        self.kid = kid
        self.source = source
        self.algorithms = Set(algorithms)
        self.fingerprint = Self.fingerprint(of: self.material)
        self.keyedHMACs = KeyedHMACs(self.material)
    }

    /// A public key from PEM (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`): RSA (2048 bits or more),
    /// P-256 or P-384; the algorithms follow from the key, narrowed by `algorithms` when given.
    public init(pem: String, kid: String? = nil, algorithms: [JWTAlgorithm]? = nil, source: String) throws(Error) {
        let material: Material
        if let key = try? P256.Signing.PublicKey(pemRepresentation: pem) {
            material = .p256(key)
        } else if let key = try? P384.Signing.PublicKey(pemRepresentation: pem) {
            material = .p384(key)
        } else if let key = try? _RSA.Signing.PublicKey(pemRepresentation: pem) {
            material = .rsa(key)
        } else {
            throw Error("\(source): not an RSA (2048 bits or more), P-256 or P-384 public key in PEM")
        }
        try self.init(material: material, kid: kid, algorithms: algorithms, source: source)
    }

    /// A key from its material; `algorithms` (nil: all of the family) must belong to the family.
    public init(material: Material, kid: String?, algorithms: [JWTAlgorithm]? = nil, source: String) throws(Error) {
        if case .rsa(let key) = material, key.keySizeInBits < Self.minimumRSABits {
            throw Error("\(source): RSA key of \(key.keySizeInBits) bits, at least \(Self.minimumRSABits) needed")
        }
        let family: JWTAlgorithm.Family
        switch material {
        case .hmac: family = .hmac
        case .rsa: family = .rsa
        case .p256: family = .p256
        case .p384: family = .p384
        }
        let allowed = algorithms ?? JWTAlgorithm.algorithms(of: family)
        guard !allowed.isEmpty else { throw Error("\(source): no algorithms allowed") }
        for algorithm in allowed where algorithm.family != family {
            throw Error("\(source): \(algorithm.rawValue) cannot be used with a \(family.rawValue) key")
        }
        self.material = material
        self.kid = kid
        self.source = source
        self.algorithms = Set(allowed)
        self.fingerprint = Self.fingerprint(of: material)
        self.keyedHMACs = KeyedHMACs(material)
    }

    private static func fingerprint(of material: Material) -> [UInt8] {
        var hash = SHA256()
        switch material {
        case .hmac(let key):
            hash.update(data: [0])
            key.withUnsafeBytes { hash.update(bufferPointer: $0) }
        case .rsa(let key):
            hash.update(data: [1])
            hash.update(data: key.derRepresentation)
        case .p256(let key):
            hash.update(data: [2])
            hash.update(data: key.rawRepresentation)
        case .p384(let key):
            hash.update(data: [3])
            hash.update(data: key.rawRepresentation)
        }
        return Array(hash.finalize())
    }

    /// Whether `signature` is this key's signature of `input` under `algorithm`.
    /// False whenever the algorithm is not one the key allows (the header cannot pick the family).
    public func isValidSignature(_ signature: [UInt8], of input: [UInt8], algorithm: JWTAlgorithm) -> Bool {
        input.withUnsafeBytes { self.isValidSignature(signature, of: $0, algorithm: algorithm) }
    }

    /// Whether `signature` is this key's signature of the bytes `input` under `algorithm`.
    public func isValidSignature(_ signature: [UInt8], of input: UnsafeRawBufferPointer, algorithm: JWTAlgorithm) -> Bool {
        guard self.algorithms.contains(algorithm) else { return false }
        switch (self.material, algorithm) {
        case (.hmac, .hs256):
            guard var mac = self.keyedHMACs?.sha256 else { return false }
            mac.update(data: input)
            return mac.finalize() == signature  // constant time for a signature of the right length
        case (.hmac, .hs384):
            guard var mac = self.keyedHMACs?.sha384 else { return false }
            mac.update(data: input)
            return mac.finalize() == signature
        case (.hmac, .hs512):
            guard var mac = self.keyedHMACs?.sha512 else { return false }
            mac.update(data: input)
            return mac.finalize() == signature
        case (.rsa(let key), .rs256):
            return key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA256.hash(data: input), padding: .insecurePKCS1v1_5)
        case (.rsa(let key), .rs384):
            return key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA384.hash(data: input), padding: .insecurePKCS1v1_5)
        case (.rsa(let key), .rs512):
            return key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA512.hash(data: input), padding: .insecurePKCS1v1_5)
        case (.p256(let key), .es256):
            // JWS carries r||s (64 bytes), not DER.
            guard signature.count == 64, let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.isValidSignature(sig, for: SHA256.hash(data: input))
        case (.p384(let key), .es384):
            guard signature.count == 96, let sig = try? P384.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return key.isValidSignature(sig, for: SHA384.hash(data: input))
        default:
            return false
        }
    }
}
