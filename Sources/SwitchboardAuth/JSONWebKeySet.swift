import Crypto
import CryptoExtras
import SwitchboardCore

/// Reads a JWK Set (RFC 7517) into verification keys: RSA (`n`, `e`), EC P-256 and P-384 (`x`, `y`).
///
/// Keys for encryption (`use: enc`), of other types (`oct`: a JWKS never carries HMAC secrets here),
/// of other curves, without a `kid`, or malformed are skipped, not fatal: one odd key must not take
/// the whole set down. An `alg` on a key narrows it to that algorithm, which must fit the key. RSA keys
/// are 2,048 to 4,096 bits: a larger one (the set is fetched from elsewhere) would make every token
/// that names it cost several times the CPU to check, forged ones included.
public enum JSONWebKeySet {
    /// Most keys read from one set.
    public static let maximumKeys = 64
    /// Most entries looked at for them: junk entries before the good ones do not hide them.
    public static let maximumEntries = 1024
    /// Largest RSA modulus taken from a set, in bits.
    public static let maximumRSABits = 4096

    /// Why a document is not a JWK Set at all.
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The keys of a set; `source` names where it came from (the file or URL), part of each key's identity.
    /// A set with no usable key is an error, not an empty set: a JWKS endpoint answering `{"keys":[]}`
    /// (or only keys this server cannot use) would otherwise replace the last good set and refuse
    /// every token.
    public static func parse(_ bytes: [UInt8], source: String) throws(Error) -> [VerificationKey] {
        guard UTF8Validation.isValid(bytes), let document = try? JSONParser(maximumDepth: 8, maximumValues: 10_000).parse(bytes),
            let list = document["keys"]?.arrayValue
        else { throw Error(description: "\(source): not a JWK Set (an object with a keys list)") }
        var keys: [VerificationKey] = []
        for entry in list.prefix(Self.maximumEntries) where keys.count < Self.maximumKeys {
            if let key = Self.key(entry, source: source) { keys.append(key) }
        }
        guard !keys.isEmpty else { throw Error(description: "\(source): no usable key in the set (\(list.count) entries)") }
        return keys
    }

    static func key(_ entry: JSONValue, source: String) -> VerificationKey? {
        guard case .object(let jwk) = entry, let kid = jwk["kid"]?.stringValue, !kid.isEmpty, kid.utf8.count <= 256 else { return nil }
        if let use = jwk["use"]?.stringValue, use != "sig" { return nil }
        var algorithms: [JWTAlgorithm]?
        if let alg = jwk["alg"]?.stringValue {
            guard let algorithm = JWTAlgorithm(header: alg) else { return nil }
            algorithms = [algorithm]
        }
        func bytes(_ name: String) -> [UInt8]? {
            guard let text = jwk[name]?.stringValue, text.utf8.count <= 2048 else { return nil }
            return Base64URL.decode(Substring(text))
        }
        let material: VerificationKey.Material
        switch jwk["kty"]?.stringValue {
        case "RSA":
            guard let n = bytes("n"), let e = bytes("e"), !n.isEmpty, !e.isEmpty, e.count <= 8,
                let key = try? _RSA.Signing.PublicKey(n: n, e: e), key.keySizeInBits <= Self.maximumRSABits
            else { return nil }
            material = .rsa(key)
        case "EC":
            guard let x = bytes("x"), let y = bytes("y") else { return nil }
            switch jwk["crv"]?.stringValue {
            case "P-256":
                guard x.count == 32, y.count == 32, let key = try? P256.Signing.PublicKey(rawRepresentation: x + y) else { return nil }
                material = .p256(key)
            case "P-384":
                guard x.count == 48, y.count == 48, let key = try? P384.Signing.PublicKey(rawRepresentation: x + y) else { return nil }
                material = .p384(key)
            default:
                return nil
            }
        default:
            return nil
        }
        return try? VerificationKey(material: material, kid: kid, algorithms: algorithms, source: "jwks:\(source)")
    }
}
