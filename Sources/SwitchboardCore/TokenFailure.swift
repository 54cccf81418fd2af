/// Why a token was refused. The reason is for logs and never quotes the token.
public enum TokenFailure: Error, Hashable, Sendable, CustomStringConvertible {
    /// Malformed, badly signed, for another audience or issuer, not yet valid, or over a size cap:
    /// the connection is closed with 3500 (a subscription is refused with 103).
    case invalid(String)
    /// Valid but expired (beyond the leeway): error 109, then 3503 for a connection token.
    case expired

    public var description: String {
        switch self {
        case .invalid(let reason): "invalid token: \(reason)"
        case .expired: "token expired"
        }
    }
}
