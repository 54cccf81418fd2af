/// What a client asks to do with a channel.
public enum ChannelAction: String, Hashable, Sendable, CaseIterable {
    case subscribe
    case publish
    case history
    case presence
    case presenceStats
}

/// Who asks to act on a channel, as far as permissions care.
public struct ChannelRequester: Hashable, Sendable {
    /// The connection's user; empty for an anonymous connection.
    public var user: String
    /// The HTTP server API, authenticated by the API key: may do everything.
    public var isServerAPI: Bool
    /// The request carries a subscription token that verified for this user and channel
    /// (only `subscribe` carries one).
    public var hasSubscriptionToken: Bool
    /// The connection is subscribed to the channel now.
    public var isSubscribed: Bool

    public init(user: String, isServerAPI: Bool = false, hasSubscriptionToken: Bool = false, isSubscribed: Bool = false) {
        self.user = user
        self.isServerAPI = isServerAPI
        self.hasSubscriptionToken = hasSubscriptionToken
        self.isSubscribed = isSubscribed
    }

    /// The HTTP server API.
    public static let serverAPI = ChannelRequester(user: "", isServerAPI: true)

    public var isAnonymous: Bool { self.user.isEmpty }
}

/// The one rule deciding what a client may do with a channel, whatever transport it came by
/// (WebSocket, SSE, long-poll, `/rpc`) and whoever asks (the server API may do everything).
///
/// Order of checks (Centrifugo's):
/// 1. the server API with its key: allowed;
/// 2. a feature that is off for the channel (history, presence): 108, before any 103;
/// 3. in dev mode (`enforcing` false, no token key configured): allowed, except the namespace
///    restrictions `publish: false` and `anonymous: false`, which apply in both modes;
/// 4. `subscribe`: a valid subscription token decides alone; a `$` channel needs one;
///    `name#u1,u2` admits the listed users when the namespace allows user-limited channels;
///    then `allowSubscribeForClient` (and `allowSubscribeForAnonymous` for anonymous clients);
/// 5. `publish`, `history`, `presence`: the `...ForClient` flag, or the `...ForSubscriber` flag
///    when subscribed (only the latter on `$` channels), and `...ForAnonymous` as well for an
///    anonymous client.
///
/// Everything not granted is refused with 103: deny by default once any token key is configured.
public enum ChannelPermission {
    /// The prefix of channels that need a subscription token.
    public static let privatePrefix: UInt8 = UInt8(ascii: "$")

    /// nil when `requester` may do `action` on `channel` (with its namespace's `options`); otherwise the error to answer.
    ///
    /// - Parameter enforcing: whether the node enforces permissions (any token key configured).
    public static func check(
        _ action: ChannelAction,
        channel: String,
        options: NamespaceOptions,
        requester: ChannelRequester,
        enforcing: Bool
    ) -> SwitchboardError? {
        if requester.isServerAPI { return nil }
        switch action {
        case .history where !options.keepsHistory:
            return SwitchboardError(.notAvailable, "history is off for this channel")
        case .presence where !options.presence, .presenceStats where !options.presence:
            return SwitchboardError(.notAvailable, "presence is off for this channel")
        default:
            break
        }
        let isPrivate = channel.utf8.first == Self.privatePrefix
        if action == .subscribe, requester.hasSubscriptionToken { return nil }
        if requester.isAnonymous, !options.anonymous { return .permissionDenied }
        if action == .publish, !options.publish { return .permissionDenied }
        guard enforcing else {
            return isPrivate && action == .subscribe ? SwitchboardError(.permissionDenied, "channels starting with $ need a subscription token") : nil
        }
        let anonymousOK: Bool
        let granted: Bool
        switch action {
        case .subscribe:
            if isPrivate { return SwitchboardError(.permissionDenied, "channels starting with $ need a subscription token") }
            if options.allowUserLimitedChannels, let users = ChannelName.limitedUsers(of: channel) {
                return !requester.isAnonymous && users.contains(where: { $0 == requester.user[...] }) ? nil : .permissionDenied
            }
            granted = options.allowSubscribeForClient
            anonymousOK = options.allowSubscribeForAnonymous
        case .publish:
            granted = (options.allowPublishForClient && !isPrivate) || (options.allowPublishForSubscriber && requester.isSubscribed)
            anonymousOK = options.allowPublishForAnonymous
        case .history:
            granted = (options.allowHistoryForClient && !isPrivate) || (options.allowHistoryForSubscriber && requester.isSubscribed)
            anonymousOK = options.allowHistoryForAnonymous
        case .presence, .presenceStats:
            granted = (options.allowPresenceForClient && !isPrivate) || (options.allowPresenceForSubscriber && requester.isSubscribed)
            anonymousOK = options.allowPresenceForAnonymous
        }
        guard granted, !requester.isAnonymous || anonymousOK else { return .permissionDenied }
        return nil
    }
}
