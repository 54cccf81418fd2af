import Crypto
import SwitchboardCore
import CryptoExtras

/// Signs tokens in tests with any header (including lies about `alg`).
enum TokenMinter {
    enum Signer {
        case hmac([UInt8])
        case rsa(_RSA.Signing.PrivateKey)
        case p256(P256.Signing.PrivateKey)
        case p384(P384.Signing.PrivateKey)
        case raw([UInt8])
    }

    static func encode(_ json: String) -> String { Base64URL.encode(Array(json.utf8)) }

    /// `header` and `payload` are JSON texts; `algorithm` picks the hash.
    static func mint(header: String, payload: String, signer: Signer, algorithm: String) throws -> String {
        let input = encode(header) + "." + encode(payload)
        let data = Array(input.utf8)
        let signature: [UInt8]
        switch signer {
        case .hmac(let secret):
            let key = SymmetricKey(data: secret)
            switch algorithm {
            case "HS384": signature = Array(HMAC<SHA384>.authenticationCode(for: data, using: key))
            case "HS512": signature = Array(HMAC<SHA512>.authenticationCode(for: data, using: key))
            default: signature = Array(HMAC<SHA256>.authenticationCode(for: data, using: key))
            }
        case .rsa(let key):
            switch algorithm {
            case "RS384": signature = Array(try key.signature(for: SHA384.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation)
            case "RS512": signature = Array(try key.signature(for: SHA512.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation)
            default: signature = Array(try key.signature(for: SHA256.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation)
            }
        case .p256(let key):
            signature = Array(try key.signature(for: SHA256.hash(data: data)).rawRepresentation)
        case .p384(let key):
            signature = Array(try key.signature(for: SHA384.hash(data: data)).rawRepresentation)
        case .raw(let bytes):
            signature = bytes
        }
        return input + "." + Base64URL.encode(signature)
    }

    static func header(_ alg: String, kid: String? = nil) -> String {
        if let kid { return #"{"alg":"\#(alg)","typ":"JWT","kid":"\#(kid)"}"# }
        return #"{"alg":"\#(alg)","typ":"JWT"}"#
    }
}

/// Keys made once per test process (RSA generation is slow).
enum TestKeys {
    static let secret = Array("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".utf8)
    static let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let p256 = P256.Signing.PrivateKey()
    static let p384 = P384.Signing.PrivateKey()
}
