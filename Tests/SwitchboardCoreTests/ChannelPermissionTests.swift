import SwitchboardCore
import Testing

@Suite("ChannelPermission")
struct ChannelPermissionTests {
    /// Who asks, in short.
    enum Who: String, CustomStringConvertible {
        case anonymous, alice, aliceSubscribed, aliceWithToken, anonymousWithToken, api
        var requester: ChannelRequester {
            switch self {
            case .anonymous: ChannelRequester(user: "")
            case .alice: ChannelRequester(user: "alice")
            case .aliceSubscribed: ChannelRequester(user: "alice", isSubscribed: true)
            case .aliceWithToken: ChannelRequester(user: "alice", hasSubscriptionToken: true)
            case .anonymousWithToken: ChannelRequester(user: "", hasSubscriptionToken: true)
            case .api: .serverAPI
            }
        }
        var description: String { self.rawValue }
    }

    static func ns(_ configure: (inout NamespaceOptions) -> Void = { _ in }) -> NamespaceOptions {
        var options = NamespaceOptions()
        configure(&options)
        return options
    }

    static let none = ns()
    static let subscribeClient = ns { $0.allowSubscribeForClient = true }
    static let subscribeAll = ns { $0.allowSubscribeForClient = true; $0.allowSubscribeForAnonymous = true }
    static let publishSubscriber = ns { $0.allowPublishForSubscriber = true }
    static let publishClient = ns { $0.allowPublishForClient = true }
    static let publishAnonymous = ns { $0.allowPublishForClient = true; $0.allowPublishForAnonymous = true }
    static let historyOff = ns { $0.historySize = 0; $0.allowHistoryForClient = true }
    static let presenceOff = ns { $0.presence = false; $0.allowPresenceForClient = true }
    static let historySubscriber = ns { $0.allowHistoryForSubscriber = true }
    static let presenceClient = ns { $0.allowPresenceForClient = true }
    static let userLimited = ns { $0.allowUserLimitedChannels = true }
    static let userLimitedAndOpen = ns { $0.allowUserLimitedChannels = true; $0.allowSubscribeForClient = true }
    static let noHistory = ns { $0.historySize = 0 }
    static let noPresence = ns { $0.presence = false }
    static let noPublish = ns { $0.publish = false; $0.allowPublishForClient = true }
    static let closedToAnonymous = ns { $0.anonymous = false; $0.allowSubscribeForClient = true; $0.allowSubscribeForAnonymous = true }

    /// (action, channel, options, who, enforcing, expected code or nil)
    static let table: [(ChannelAction, String, NamespaceOptions, Who, Bool, Int?)] = [
        // Default deny once a token key is configured.
        (.subscribe, "chat:1", none, .alice, true, 103),
        (.subscribe, "chat:1", none, .anonymous, true, 103),
        (.publish, "chat:1", none, .aliceSubscribed, true, 103),
        (.history, "chat:1", none, .aliceSubscribed, true, 103),
        (.presence, "chat:1", none, .aliceSubscribed, true, 103),
        (.presenceStats, "chat:1", none, .aliceSubscribed, true, 103),
        // Dev mode: everything allowed (the namespace restrictions aside).
        (.subscribe, "chat:1", none, .anonymous, false, nil),
        (.publish, "chat:1", none, .anonymous, false, nil),
        (.history, "chat:1", none, .anonymous, false, nil),
        (.presence, "chat:1", none, .anonymous, false, nil),
        (.publish, "chat:1", noPublish, .alice, false, 103),
        (.subscribe, "chat:1", closedToAnonymous, .anonymous, false, 103),
        // Subscribe flags.
        (.subscribe, "chat:1", subscribeClient, .alice, true, nil),
        (.subscribe, "chat:1", subscribeClient, .anonymous, true, 103),
        (.subscribe, "chat:1", subscribeAll, .anonymous, true, nil),
        (.subscribe, "chat:1", closedToAnonymous, .anonymous, true, 103),
        // `$` channels need a subscription token, in both modes; a valid one decides alone.
        (.subscribe, "$chat:1", subscribeAll, .alice, true, 103),
        (.subscribe, "$chat:1", none, .anonymous, false, 103),
        (.subscribe, "$chat:1", none, .aliceWithToken, true, nil),
        (.subscribe, "chat:1", none, .aliceWithToken, true, nil),
        (.subscribe, "chat:1", closedToAnonymous, .anonymousWithToken, true, nil),
        // User-limited channels.
        (.subscribe, "dialog#alice,bob", userLimited, .alice, true, nil),
        (.subscribe, "dialog#bob,carol", userLimited, .alice, true, 103),
        (.subscribe, "dialog#alice,bob", userLimited, .anonymous, true, 103),
        (.subscribe, "dialog#bob", userLimitedAndOpen, .alice, true, 103),
        (.subscribe, "dialog#alice,bob", none, .alice, true, 103),
        (.subscribe, "dialog#alicex", userLimited, .alice, true, 103),
        // Publish.
        (.publish, "chat:1", publishSubscriber, .aliceSubscribed, true, nil),
        (.publish, "chat:1", publishSubscriber, .alice, true, 103),
        (.publish, "chat:1", publishClient, .alice, true, nil),
        (.publish, "chat:1", publishClient, .anonymous, true, 103),
        (.publish, "chat:1", publishAnonymous, .anonymous, true, nil),
        (.publish, "$chat:1", publishClient, .alice, true, 103),
        (.publish, "$chat:1", publishSubscriber, .aliceSubscribed, true, nil),
        (.publish, "chat:1", noPublish, .alice, true, 103),
        // 108 before 103.
        (.history, "chat:1", historyOff, .anonymous, true, 108),
        (.history, "chat:1", noHistory, .anonymous, true, 108),
        (.presence, "chat:1", presenceOff, .anonymous, true, 108),
        (.presenceStats, "chat:1", noPresence, .alice, true, 108),
        (.history, "chat:1", historyOff, .alice, false, 108),
        (.history, "chat:1", historySubscriber, .aliceSubscribed, true, nil),
        (.history, "chat:1", historySubscriber, .alice, true, 103),
        (.presence, "chat:1", presenceClient, .alice, true, nil),
        (.presenceStats, "chat:1", presenceClient, .anonymous, true, 103),
        // The server API may do everything (but a feature that is off stays off).
        (.publish, "$secret:1", none, .api, true, nil),
        (.subscribe, "$secret:1", none, .api, true, nil),
        (.history, "chat:1", historyOff, .api, true, nil),
    ]

    @Test("the decision table", arguments: Self.table.indices)
    func decision(_ row: Int) {
        let (action, channel, options, who, enforcing, expected) = Self.table[row]
        let result = ChannelPermission.check(action, channel: channel, options: options, requester: who.requester, enforcing: enforcing)
        #expect(result?.code.rawValue == expected, "\(action) \(channel) by \(who) enforcing=\(enforcing)")
    }

    @Test("a leading $ is not part of the namespace")
    func privatePrefixNamespace() {
        var table = NamespaceTable()
        table.namespaces["chat"] = Self.subscribeClient
        #expect(table.options(for: "$chat:1").allowSubscribeForClient)
        #expect(!table.options(for: "other:1").allowSubscribeForClient)
    }

    @Test("user lists of user-limited channels")
    func limitedUsers() {
        #expect(ChannelName.limitedUsers(of: "dm#a,b")! == ["a", "b"])
        #expect(ChannelName.limitedUsers(of: "dm")  == nil)
        #expect(ChannelName.limitedUsers(of: "dm#")! == [])
    }
}
