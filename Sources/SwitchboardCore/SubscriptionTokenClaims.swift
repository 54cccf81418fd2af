/// What a valid subscription token grants: one user, one channel.
public struct SubscriptionTokenClaims: Hashable, Sendable {
    /// The user the token was minted for (`sub`); equals the connection's user.
    public var user: String
    /// The channel the token admits (`channel`); equals the requested one.
    public var channel: String
    /// When the subscription's credentials expire (`expire_at`, else `exp`); nil: never.
    public var expiresAt: Double?
    /// Channel-specific data (`info`), at most 2 KB.
    public var info: JSONValue?

    public init(user: String, channel: String, expiresAt: Double? = nil, info: JSONValue? = nil) {
        self.user = user
        self.channel = channel
        self.expiresAt = expiresAt
        self.info = info
    }

    /// Reads and checks the claims of a subscription token whose signature was verified, for the
    /// connection of `user` subscribing to `channel`: both must match exactly.
    public init(payload: JSONValue, user: String, channel: String, now: Double, policy: TokenClaimPolicy) throws(TokenFailure) {
        guard case .object(let object) = payload else { throw .invalid("payload is not an object") }
        let expiresAt = try policy.checkCommonClaims(object, now: now)
        guard let tokenChannel = try TokenClaimPolicy.string(object, "channel"), !tokenChannel.isEmpty else {
            throw .invalid("a subscription token must carry channel")
        }
        guard tokenChannel == channel else { throw .invalid("channel does not match") }
        // Bytes, not canonical equivalence: both sides are NFC, so equal users are equal bytes.
        guard try TokenClaimPolicy.user(object).utf8.elementsEqual(user.utf8) else { throw .invalid("sub does not match the connection's user") }
        self.user = user
        self.channel = channel
        self.expiresAt = expiresAt
        self.info = try policy.info(object)
    }
}
