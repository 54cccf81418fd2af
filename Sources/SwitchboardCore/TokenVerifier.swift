import Crypto
import Foundation

/// What a valid connection token says about a client.
public struct TokenClaims: Hashable, Sendable {
    /// The user id (`sub`).
    public var user: String
    /// Expiry as seconds since 1970 (`exp`), when set.
    public var expiresAt: Double?
    /// Application data shown to others in presence and publications (`info`).
    public var info: JSONValue?
}

/// Verifies HS256 JSON Web Tokens that clients present in `connect`.
public struct TokenVerifier: Sendable {
    /// Why a token was refused.
    public enum Failure: Error, Hashable, Sendable {
        case invalid
        case expired
    }

    private let secret: [UInt8]
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    public let leeway: Double

    /// Longest `sub` accepted, in bytes.
    public static let maximumUserLength = 256

    public init(secret: String, leeway: Double = 0) {
        self.secret = Array(secret.utf8)
        self.leeway = min(max(leeway, 0), 60)
    }

    /// A NumericDate claim (seconds since 1970) when present: a finite JSON number, else the token is invalid.
    static func time(_ payload: JSONValue, _ name: String) throws(Failure) -> Double? {
        guard let value = payload[name], value != .null else { return nil }
        guard let seconds = value.doubleValue, seconds.isFinite else { throw .invalid }
        return seconds
    }

    private var key: SymmetricKey { SymmetricKey(data: self.secret) }

    /// Checks the signature and expiry and returns the claims.
    public func verify(_ token: String, now: Double? = nil) throws(Failure) -> TokenClaims {
        let now = now ?? Date().timeIntervalSince1970
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3, token.utf8.count < 8192 else { throw .invalid }
        guard let headerBytes = Self.base64URLDecode(parts[0]),
            let payloadBytes = Self.base64URLDecode(parts[1]),
            let signature = Self.base64URLDecode(parts[2])
        else { throw .invalid }
        let parser = JSONParser(maximumDepth: 16, maximumValues: 1000)
        guard UTF8Validation.isValid(headerBytes), UTF8Validation.isValid(payloadBytes),
            let header = try? parser.parse(headerBytes), header["alg"]?.stringValue == "HS256"
        else { throw .invalid }
        let signingInput = Array(token.utf8.prefix(parts[0].count + 1 + parts[1].count))
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: self.key) else {
            throw .invalid
        }
        guard let payload = try? parser.parse(payloadBytes), case .object = payload else { throw .invalid }
        guard let user = payload["sub"]?.stringValue, !user.isEmpty, user.utf8.count <= Self.maximumUserLength else { throw .invalid }
        // Times are any JSON number a signer wrote: 1e300, 2^63 and 1e400 (infinite as a Double)
        // included. Each is checked to be finite here, and deadlines built from them are clamped.
        let expiresAt = try Self.time(payload, "exp")
        if let expiresAt, expiresAt <= now - self.leeway { throw .expired }
        if let notBefore = try Self.time(payload, "nbf"), notBefore > now + self.leeway { throw .invalid }
        _ = try Self.time(payload, "iat")
        return TokenClaims(user: user, expiresAt: expiresAt, info: payload["info"])
    }

    static func base64URLDecode(_ bytes: Substring.UTF8View.SubSequence) -> [UInt8]? {
        Base64URL.decode(Substring(bytes))
    }

    /// Makes a token (for tests and tools).
    public func sign(user: String, expiresAt: Double? = nil, info: JSONValue? = nil) -> String {
        var claims: [(key: String, value: JSONValue)] = [("sub", .string(user))]
        if let expiresAt {
            let whole = expiresAt.rounded(.down)
            claims.append(("exp", abs(whole) < 9e18 ? .integer(Int64(whole)) : .number(String(expiresAt))))
        }
        if let info { claims.append(("info", info)) }
        let header = Self.base64URLEncode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = Self.base64URLEncode(Array(JSONValue.object(JSONObject(claims)).jsonString.utf8))
        let input = header + "." + payload
        let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: self.key)
        return input + "." + Self.base64URLEncode(Array(mac))
    }

    static func base64URLEncode(_ bytes: [UInt8]) -> String {
        Base64URL.encode(bytes)
    }
}
