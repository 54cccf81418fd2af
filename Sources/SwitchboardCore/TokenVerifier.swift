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

    public init(secret: String) {
        self.secret = Array(secret.utf8)
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
        guard let user = payload["sub"]?.stringValue else { throw .invalid }
        var expiresAt: Double?
        if let exp = payload["exp"], exp != .null {
            guard let value = exp.doubleValue else { throw .invalid }
            expiresAt = value
            if value <= now { throw .expired }
        }
        return TokenClaims(user: user, expiresAt: expiresAt, info: payload["info"])
    }

    static func base64URLDecode(_ bytes: Substring.UTF8View.SubSequence) -> [UInt8]? {
        Base64URL.decode(Substring(bytes))
    }

    /// Makes a token (for tests and tools).
    public func sign(user: String, expiresAt: Double? = nil, info: JSONValue? = nil) -> String {
        var claims: [(key: String, value: JSONValue)] = [("sub", .string(user))]
        if let expiresAt { claims.append(("exp", .integer(Int64(expiresAt)))) }
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
