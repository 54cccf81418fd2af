/// What a valid connection token says about a client (Centrifugo's claim names).
public struct ConnectionTokenClaims: Hashable, Sendable {
    /// The user id (`sub`); empty for an anonymous connection.
    public var user: String
    /// When the connection's credentials expire, seconds since 1970 (`expire_at`, else `exp`); nil: never.
    public var expiresAt: Double?
    /// Token id (`jti`), for logs.
    public var tokenID: String?
    /// Application data shown to others in presence and join/leave (`info`, at most 2 KB).
    public var info: JSONValue?
    /// Server-side data (`meta`), never sent to clients.
    public var meta: JSONValue?
    /// Channels the server subscribes the connection to (`channels`).
    public var channels: [String]

    public init(user: String, expiresAt: Double? = nil, tokenID: String? = nil, info: JSONValue? = nil, meta: JSONValue? = nil, channels: [String] = []) {
        self.user = user
        self.expiresAt = expiresAt
        self.tokenID = tokenID
        self.info = info
        self.meta = meta
        self.channels = channels
    }

    /// Reads and checks the claims of a connection token whose signature was verified.
    ///
    /// A connection token carrying `channel` is refused: it is a subscription token, and accepting it
    /// here would let a token minted for one channel open a connection.
    public init(payload: JSONValue, now: Double, policy: TokenClaimPolicy) throws(TokenFailure) {
        guard case .object(let object) = payload else { throw .invalid("payload is not an object") }
        if let channel = object["channel"], channel != .null { throw .invalid("a connection token must not carry channel") }
        let expiresAt = try policy.checkCommonClaims(object, now: now)
        self.user = try TokenClaimPolicy.user(object)
        self.expiresAt = expiresAt
        self.tokenID = try TokenClaimPolicy.string(object, "jti")
        self.info = try policy.info(object)
        self.meta = try policy.meta(object)
        var channels: [String] = []
        if let list = object["channels"], list != .null {
            guard let items = list.arrayValue, items.count <= TokenClaimPolicy.maximumChannels else {
                throw .invalid("channels must be a list of at most \(TokenClaimPolicy.maximumChannels) names")
            }
            for item in items {
                guard let name = item.stringValue, (try? ChannelName.validate(name)) != nil else { throw .invalid("channels holds an invalid name") }
                channels.append(name)
            }
        }
        self.channels = channels
    }
}
