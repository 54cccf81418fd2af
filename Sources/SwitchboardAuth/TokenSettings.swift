public import SwitchboardCore

/// The `tokens` part of the node's configuration: which keys verify tokens and the claim rules.
/// Plain data (files are read when the verifier is built, so a bad file fails the start).
///
/// ```json
/// "tokens": {
///   "hmac": [{"kid": "h1", "secret": "...", "algorithms": ["HS256"]}],
///   "publicKeys": [{"kid": "r1", "file": "rsa.pub.pem"}],
///   "jwks": {"url": "https://auth.example/jwks.json"},
///   "audience": "switchboard", "issuer": "auth.example", "leeway": 5, "refreshGrace": 25, "maxTokenBytes": 8192
/// }
/// ```
public struct TokenSettings: Hashable, Sendable {
    /// An HMAC secret (`secret`, or `secretFile` read at start).
    public struct HMACKey: Hashable, Sendable, CustomStringConvertible {
        public var kid: String?
        public var secret: String
        public var algorithms: [JWTAlgorithm]

        public init(kid: String? = nil, secret: String, algorithms: [JWTAlgorithm] = [.hs256]) {
            self.kid = kid
            self.secret = secret
            self.algorithms = algorithms
        }

        /// Never the secret.
        public var description: String { "HMACKey(kid: \(self.kid ?? "none"), secret: <redacted>, algorithms: \(self.algorithms.map(\.rawValue)))" }
    }

    /// A PEM public key file.
    public struct PublicKeyFile: Hashable, Sendable {
        public var kid: String?
        public var file: String
        public var algorithms: [JWTAlgorithm]?

        public init(kid: String? = nil, file: String, algorithms: [JWTAlgorithm]? = nil) {
            self.kid = kid
            self.file = file
            self.algorithms = algorithms
        }
    }

    /// Where a JWK Set comes from: a file read at start, or one fixed URL.
    public enum JWKSSource: Hashable, Sendable {
        case file(String)
        case url(String)
    }

    public var hmac: [HMACKey] = []
    public var publicKeys: [PublicKeyFile] = []
    public var jwks: JWKSSource?
    public var audience: String?
    public var issuer: String?
    /// Seconds of clock skew allowed (default 5, at most 60).
    public var leeway: Double = TokenClaimPolicy.defaultLeeway
    /// Seconds after expiry before an unrefreshed connection or subscription is ended.
    public var refreshGrace: Double = 25
    /// Longest token accepted, in bytes.
    public var maxTokenBytes: Int = JWTVerifier.defaultMaximumTokenBytes

    public init() {}

    /// Whether any key is configured: then the node enforces permissions (no dev mode).
    public var hasKeys: Bool { !self.hmac.isEmpty || !self.publicKeys.isEmpty || self.jwks != nil }

    /// The claim rules.
    public var policy: TokenClaimPolicy {
        TokenClaimPolicy(leeway: self.leeway, audience: self.audience, issuer: self.issuer)
    }
}

extension TokenSettings: CustomStringConvertible {
    /// Safe to log: secrets are never shown.
    public var description: String {
        "TokenSettings(hmac: \(self.hmac.map(\.description)), publicKeys: \(self.publicKeys.map(\.file)), jwks: \(String(describing: self.jwks)), "
            + "audience: \(self.audience ?? "-"), issuer: \(self.issuer ?? "-"), leeway: \(self.leeway), refreshGrace: \(self.refreshGrace), maxTokenBytes: \(self.maxTokenBytes))"
    }
}
