/// Why the server ends one subscription (the `unsubscribe` push), without ending the connection.
///
/// Codes 2000-2499 are final for the subscription; 2500-2999 ask the client to subscribe again
/// with its position (it recovers what it missed, or learns `recovered: false`).
public struct UnsubscribeCode: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public let reason: String

    public init(_ rawValue: Int, _ reason: String) {
        self.rawValue = rawValue
        self.reason = reason
    }

    /// Whether the client should subscribe again.
    public var resubscribe: Bool { self.rawValue >= 2500 && self.rawValue < 3000 }

    public var description: String { "\(self.rawValue) \(self.reason)" }

    /// The server API unsubscribed the user (`POST /api/unsubscribe`).
    public static let server = UnsubscribeCode(2000, "server unsubscribe")
    /// The subscription's token expired and was not refreshed (`subRefresh`) within the grace:
    /// the client subscribes again with a new token and its position.
    public static let subscriptionExpired = UnsubscribeCode(2501, "subscription expired")
    /// The node lost track of the channel (a gap it could not refill, an epoch change).
    public static let insufficientState = UnsubscribeCode(2500, "insufficient state")
}
