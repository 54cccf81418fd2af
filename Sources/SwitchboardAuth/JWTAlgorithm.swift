/// The JWS algorithms a node verifies. `none` (in any spelling) is not one of them, and never will be.
public enum JWTAlgorithm: String, Hashable, Sendable, CaseIterable {
    case hs256 = "HS256"
    case hs384 = "HS384"
    case hs512 = "HS512"
    case rs256 = "RS256"
    case rs384 = "RS384"
    case rs512 = "RS512"
    case es256 = "ES256"
    case es384 = "ES384"

    /// The kind of key an algorithm needs.
    public enum Family: String, Hashable, Sendable {
        case hmac
        case rsa
        case p256
        case p384
    }

    public var family: Family {
        switch self {
        case .hs256, .hs384, .hs512: .hmac
        case .rs256, .rs384, .rs512: .rsa
        case .es256: .p256
        case .es384: .p384
        }
    }

    /// The header `alg` exactly as registered (case-sensitive, RFC 7515): `hs256` or `None` are not algorithms.
    public init?(header: String) {
        self.init(rawValue: header)
    }

    /// Shortest HMAC secret accepted for the algorithm, in bytes: the hash output (RFC 7518 3.2).
    public var minimumSecretBytes: Int {
        switch self {
        case .hs256: 32
        case .hs384: 48
        case .hs512: 64
        default: 0
        }
    }

    /// The algorithms a key of `family` can verify.
    public static func algorithms(of family: Family) -> [JWTAlgorithm] {
        Self.allCases.filter { $0.family == family }
    }
}
