/// Why the server ends a connection; carried by close frames and by the `disconnect` push.
///
/// Codes 3000-3499 tell the client to reconnect, 3500-3999 not to.
public struct DisconnectCode: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public let reason: String

    public init(_ rawValue: UInt16, _ reason: String) {
        self.rawValue = rawValue
        self.reason = reason
    }

    /// Whether a client should reconnect after this code.
    public var reconnect: Bool { self.rawValue >= 3000 && self.rawValue < 3500 }

    public var description: String { "\(self.rawValue) \(self.reason)" }

    public static let normal = DisconnectCode(3000, "normal")
    public static let shutdown = DisconnectCode(3001, "shutdown")
    public static let rebalance = DisconnectCode(3002, "rebalance")
    public static let slowConsumer = DisconnectCode(3004, "slow consumer")
    public static let insufficientState = DisconnectCode(3005, "insufficient state")
    public static let noPong = DisconnectCode(3006, "no pong")
    public static let invalidToken = DisconnectCode(3500, "invalid token")
    public static let badRequest = DisconnectCode(3501, "bad request")
    public static let forced = DisconnectCode(3502, "forced")
    public static let tokenExpired = DisconnectCode(3503, "token expired")
    public static let connectionLimit = DisconnectCode(3504, "connection limit")
    public static let tooManyRequests = DisconnectCode(3507, "too many requests")
    public static let messageTooBig = DisconnectCode(1009, "message too big")
    public static let unsupportedData = DisconnectCode(1003, "binary messages are not supported")

    /// `3501` with a more precise reason.
    public static func badRequest(_ reason: String) -> DisconnectCode {
        DisconnectCode(3501, reason)
    }
}
