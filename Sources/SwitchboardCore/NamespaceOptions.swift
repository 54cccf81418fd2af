/// What a namespace of channels allows and keeps.
public struct NamespaceOptions: Hashable, Sendable {
    /// Publications kept per channel; 0 keeps no history (no offsets, no recovery).
    public var historySize: Int
    /// How long publications stay in history, in seconds.
    public var historyTTL: Double
    /// Whether presence and presenceStats are available.
    public var presence: Bool
    /// Whether subscribers get join/leave pushes.
    public var joinLeave: Bool
    /// Whether connected clients may publish (the server API always may).
    public var publish: Bool
    /// Whether clients without a token may subscribe (a restriction applied in every mode).
    public var anonymous: Bool

    // Grants, consulted only when the node enforces permissions (a token key is configured);
    // all false by default: nothing is allowed that a flag does not allow. Centrifugo's names.

    /// Clients with a user may subscribe (anonymous ones also need `allowSubscribeForAnonymous`).
    public var allowSubscribeForClient: Bool = false
    /// Anonymous clients may subscribe where `allowSubscribeForClient` allows.
    public var allowSubscribeForAnonymous: Bool = false
    /// Any client with a user may publish.
    public var allowPublishForClient: Bool = false
    /// A client subscribed to the channel may publish into it.
    public var allowPublishForSubscriber: Bool = false
    /// Anonymous clients may publish where the client or subscriber flag allows.
    public var allowPublishForAnonymous: Bool = false
    /// Any client with a user may read history.
    public var allowHistoryForClient: Bool = false
    /// A subscriber may read the channel's history.
    public var allowHistoryForSubscriber: Bool = false
    /// Anonymous clients may read history where the client or subscriber flag allows.
    public var allowHistoryForAnonymous: Bool = false
    /// Any client with a user may ask presence.
    public var allowPresenceForClient: Bool = false
    /// A subscriber may ask the channel's presence.
    public var allowPresenceForSubscriber: Bool = false
    /// Anonymous clients may ask presence where the client or subscriber flag allows.
    public var allowPresenceForAnonymous: Bool = false
    /// Channels named `name#u1,u2` admit exactly the listed users without a subscription token.
    public var allowUserLimitedChannels: Bool = false

    public init(
        historySize: Int = 100,
        historyTTL: Double = 300,
        presence: Bool = true,
        joinLeave: Bool = false,
        publish: Bool = true,
        anonymous: Bool = true
    ) {
        self.historySize = historySize
        self.historyTTL = historyTTL
        self.presence = presence
        self.joinLeave = joinLeave
        self.publish = publish
        self.anonymous = anonymous
    }

    /// Whether the channel keeps history (and so offsets and recovery).
    public var keepsHistory: Bool { self.historySize > 0 && self.historyTTL > 0 }

    /// The defaults when nothing is configured: history 100 / 5 minutes, presence, publish, anonymous.
    /// Join/leave pushes are off: each join costs a push to every subscriber, O(n²) for a channel filling up.
    public static let defaults = NamespaceOptions()
}

/// Channel options by namespace (the part of a channel name before `:`).
public struct NamespaceTable: Hashable, Sendable {
    public var defaults: NamespaceOptions
    public var namespaces: [String: NamespaceOptions]

    public init(defaults: NamespaceOptions = .defaults, namespaces: [String: NamespaceOptions] = [:]) {
        self.defaults = defaults
        self.namespaces = namespaces
    }

    /// The options that apply to `channel`.
    ///
    /// A leading `$` (the private-channel prefix) is not part of the namespace: `$chat:x` is in `chat`.
    public func options(for channel: String) -> NamespaceOptions {
        let channel = channel.utf8.first == UInt8(ascii: "$") ? String(channel.dropFirst()) : channel
        if !self.namespaces.isEmpty, let ns = ChannelName.namespace(of: channel), let options = self.namespaces[String(ns)] {
            return options
        }
        return self.defaults
    }
}
