/// What a client asks to do with a channel.
public enum ChannelAction: String, Hashable, Sendable, CaseIterable {
    case subscribe
    case publish
    case history
    case presence
    case presenceStats
}

/// The one rule deciding what a connected client may do with a channel,
/// whatever transport it came by (WebSocket, SSE, long-poll, `/rpc`).
///
/// Every transport asks this function and nothing else, so a namespace flag
/// means the same everywhere (a table-driven test runs every action against
/// every transport). The server API (`/api/*`, authenticated by key) is not a
/// client and is not asked.
public enum ChannelPermission {
    /// nil when `action` is allowed on a channel with `options`; otherwise the error to answer.
    ///
    /// - Parameters:
    ///   - isAnonymous: the client connected without a token (no user).
    public static func check(_ action: ChannelAction, options: NamespaceOptions, isAnonymous: Bool) -> SwitchboardError? {
        if isAnonymous, !options.anonymous { return .permissionDenied }
        switch action {
        case .subscribe:
            break
        case .publish:
            guard options.publish else { return .permissionDenied }
        case .history:
            guard options.keepsHistory else { return SwitchboardError(.notAvailable, "history is off for this channel") }
        case .presence, .presenceStats:
            guard options.presence else { return SwitchboardError(.notAvailable, "presence is off for this channel") }
        }
        return nil
    }
}
