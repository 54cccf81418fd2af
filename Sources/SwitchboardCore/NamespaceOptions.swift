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
    /// Whether clients without a token may subscribe.
    public var anonymous: Bool

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
    public func options(for channel: String) -> NamespaceOptions {
        if !self.namespaces.isEmpty, let ns = ChannelName.namespace(of: channel), let options = self.namespaces[String(ns)] {
            return options
        }
        return self.defaults
    }
}
