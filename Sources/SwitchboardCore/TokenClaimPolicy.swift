import Foundation
/// The claim rules a deployment configures, applied to every token after its signature checked out.
///
/// Pure data and pure functions: no clock is read here (the caller passes `now`), so every rule is
/// tested with injected times.
public struct TokenClaimPolicy: Hashable, Sendable {
    /// Seconds of clock skew allowed on `exp`, `nbf` and `expire_at` (0 to 60).
    public var leeway: Double
    /// When set, `aud` (a string or a list of strings) must contain it.
    public var audience: String?
    /// When set, `iss` must equal it.
    public var issuer: String?
    /// Largest `info` (as JSON text) accepted, in bytes.
    public var maximumInfoBytes: Int

    /// Default leeway in seconds.
    public static let defaultLeeway: Double = 5
    /// Largest leeway accepted.
    public static let maximumLeeway: Double = 60
    /// Longest `sub`, `jti` and `channel` accepted, in bytes.
    public static let maximumStringClaimBytes = 256
    /// Most server-side `channels` a connection token may name.
    public static let maximumChannels = 128

    public init(leeway: Double = Self.defaultLeeway, audience: String? = nil, issuer: String? = nil, maximumInfoBytes: Int = 2048) {
        self.leeway = leeway.isFinite ? min(max(leeway, 0), Self.maximumLeeway) : Self.defaultLeeway
        self.audience = audience
        self.issuer = issuer
        self.maximumInfoBytes = maximumInfoBytes
    }

    /// A NumericDate claim (seconds since 1970) when present and not null; a non-number or an
    /// infinite number makes the token invalid.
    static func time(_ payload: JSONObject, _ name: String) throws(TokenFailure) -> Double? {
        guard let value = payload[name], value != .null else { return nil }
        guard let seconds = value.doubleValue, seconds.isFinite else { throw .invalid("\(name) is not a finite number") }
        return seconds
    }

    /// A string claim when present and not null, bounded in length.
    static func string(_ payload: JSONObject, _ name: String) throws(TokenFailure) -> String? {
        guard let value = payload[name], value != .null else { return nil }
        guard let s = value.stringValue else { throw .invalid("\(name) is not a string") }
        guard s.utf8.count <= Self.maximumStringClaimBytes else { throw .invalid("\(name) is longer than \(Self.maximumStringClaimBytes) bytes") }
        return s
    }

    /// The `sub` claim, the user id (empty when absent), which must be in Unicode NFC like a channel
    /// name: Swift compares strings by canonical equivalence while Redis keys (the cluster-wide
    /// per-user cap) and user-limited channel lists work on bytes, so two spellings of one name
    /// would be one user here and two there, and could be used to pass the per-user cap.
    static func user(_ payload: JSONObject) throws(TokenFailure) -> String {
        let user = try Self.string(payload, "sub") ?? ""
        let utf8 = user.utf8
        if utf8.contains(where: { $0 >= 0x80 }), !user.precomposedStringWithCanonicalMapping.utf8.elementsEqual(utf8) {
            throw .invalid("sub is not in Unicode NFC")
        }
        return user
    }

    /// Checks the claims every token shares (`exp`, `nbf`, `iat`, `aud`, `iss`, `expire_at`) and
    /// returns the deadline the token gives its connection or subscription (nil: none).
    ///
    /// `expire_at` overrides `exp` for the life of what the token admits (0 means no expiry);
    /// `exp` still limits when the token itself may be presented.
    public func checkCommonClaims(_ payload: JSONObject, now: Double) throws(TokenFailure) -> Double? {
        let exp = try Self.time(payload, "exp")
        if let exp, exp <= now - self.leeway { throw .expired }
        if let nbf = try Self.time(payload, "nbf"), nbf > now + self.leeway { throw .invalid("nbf is in the future") }
        _ = try Self.time(payload, "iat")
        if let audience {
            switch payload["aud"] {
            case .string(let aud)?:
                guard aud == audience else { throw .invalid("aud does not match") }
            case .array(let list)?:
                guard list.count <= 64, list.contains(.string(audience)) else { throw .invalid("aud does not match") }
            default:
                throw .invalid("aud is missing")
            }
        }
        if let issuer {
            guard payload["iss"]?.stringValue == issuer else { throw .invalid("iss does not match") }
        }
        if let expireAt = try Self.time(payload, "expire_at") {
            if expireAt == 0 { return nil }
            if expireAt <= now - self.leeway { throw .expired }
            return expireAt
        }
        return exp
    }

    /// `info` when present: any JSON value up to `maximumInfoBytes` as text.
    /// The `meta` claim (server-side data, kept with presence), capped like `info`.
    func meta(_ payload: JSONObject) throws(TokenFailure) -> JSONValue? {
        guard let meta = payload["meta"], meta != .null else { return nil }
        guard meta.jsonString.utf8.count <= self.maximumInfoBytes else { throw .invalid("meta is larger than \(self.maximumInfoBytes) bytes") }
        return meta
    }

    func info(_ payload: JSONObject) throws(TokenFailure) -> JSONValue? {
        guard let info = payload["info"], info != .null else { return nil }
        guard info.jsonString.utf8.count <= self.maximumInfoBytes else { throw .invalid("info is larger than \(self.maximumInfoBytes) bytes") }
        return info
    }
}
