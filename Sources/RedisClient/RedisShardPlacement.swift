/// Where each shard channel of a `RedisClusterSubscriber` is subscribed, and what to do when Redis
/// confirms, refuses or drops a subscription, or when the slot map changes. A plain value whose events
/// return actions (the subscriber performs them), so the rules that keep a channel subscribed on the
/// master of its slot through failovers and reshardings are tested without a cluster.
///
/// A channel is `waitingForMaster` (no master for its slot in the map, or its last attempt failed:
/// retried after a map refresh), `subscribing` on a master, or `subscribed` there. A confirmed
/// subscription that is lost (its slot moved, Redis dropped it) is owed a notice: once every channel
/// is subscribed again, `tellResubscribed` says that messages may have been missed meanwhile.
struct RedisShardPlacement<Waiter> {
    enum Phase: Equatable {
        case waitingForMaster
        case subscribing(RedisNodeAddress)
        case subscribed(RedisNodeAddress)

        var node: RedisNodeAddress? {
            switch self {
            case .waitingForMaster: nil
            case .subscribing(let node), .subscribed(let node): node
            }
        }
    }

    struct Channel {
        var phase: Phase
        /// Callers of `subscribe` waiting for the confirmation.
        var waiters: [Waiter]
        /// Failed attempts in a row.
        var attempts = 0
    }

    enum Action {
        /// `SSUBSCRIBE name` on the subscriber connection to `node`.
        case subscribe(String, on: RedisNodeAddress)
        /// `SUNSUBSCRIBE name` on the connection to `node`.
        case unsubscribe(String, from: RedisNodeAddress)
        case succeed([Waiter])
        case fail([Waiter])
        /// Ask for a fresh slot map, and `retry` waiting channels in a second.
        case refreshMapAndRetry
        /// A `MOVED`/`ASK` answer: correct the map with it, then `place` the channel if it still waits.
        case followRedirection(RedisRedirection, channel: String)
        /// Every channel is subscribed again after some were lost: messages may have been missed.
        case tellResubscribed
    }

    /// Attempts to place one channel before its callers fail.
    let maximumAttempts: Int
    private(set) var channels: [String: Channel] = [:]
    /// A confirmed subscription was lost since the last `tellResubscribed`.
    private(set) var owesResubscribedNotice = false

    init(maximumAttempts: Int = 5) {
        self.maximumAttempts = maximumAttempts
    }

    /// Where `name` is (being) subscribed; nil while it waits or when it is not wanted.
    func node(of name: String) -> RedisNodeAddress? {
        self.channels[name]?.phase.node
    }

    func isWaiting(_ name: String) -> Bool {
        self.channels[name]?.phase == .waitingForMaster
    }

    /// The channels their masters confirmed, and where.
    var subscribed: [String: RedisNodeAddress] {
        var subscribed: [String: RedisNodeAddress] = [:]
        for (name, channel) in self.channels {
            if case .subscribed(let node) = channel.phase { subscribed[name] = node }
        }
        return subscribed
    }

    /// A caller wants `name` (`waiter` nil: the subscriber itself, for a probe); `owner` is its
    /// slot's master in the map now.
    mutating func subscribe(_ name: String, waiter: Waiter?, owner: RedisNodeAddress?) -> [Action] {
        if var channel = self.channels[name] {
            guard let waiter else { return [] }
            if case .subscribed = channel.phase { return [.succeed([waiter])] }
            channel.waiters.append(waiter)
            self.channels[name] = channel
            return []
        }
        self.channels[name] = Channel(phase: .waitingForMaster, waiters: waiter.map { [$0] } ?? [])
        return self.place(name, owner: owner)
    }

    /// Subscribes `name` on `owner`, or waits for a map that names one.
    mutating func place(_ name: String, owner: RedisNodeAddress?) -> [Action] {
        guard var channel = self.channels[name] else { return [] }
        guard let owner else {
            channel.phase = .waitingForMaster
            self.channels[name] = channel
            return [.refreshMapAndRetry]
        }
        channel.phase = .subscribing(owner)
        self.channels[name] = channel
        return [.subscribe(name, on: owner)]
    }

    /// No one wants `name` any more: its waiters fail, its subscription goes.
    mutating func unsubscribe(_ name: String) -> [Action] {
        guard let channel = self.channels.removeValue(forKey: name) else { return [] }
        var actions: [Action] = channel.waiters.isEmpty ? [] : [.fail(channel.waiters)]
        if let node = channel.phase.node { actions.append(.unsubscribe(name, from: node)) }
        // It may have been the last one the owed notice waited for.
        return actions + self.noticeIfAllSubscribed()
    }

    /// `node` confirmed `name`. A confirmation from where the channel no longer goes changes nothing.
    mutating func confirmed(_ name: String, on node: RedisNodeAddress) -> [Action] {
        guard var channel = self.channels[name], channel.phase == .subscribing(node) else { return [] }
        channel.phase = .subscribed(node)
        channel.attempts = 0
        let waiters = channel.waiters
        channel.waiters = []
        self.channels[name] = channel
        let actions: [Action] = waiters.isEmpty ? [] : [.succeed(waiters)]
        return actions + self.noticeIfAllSubscribed()
    }

    /// The owed notice, once every channel is subscribed again.
    private mutating func noticeIfAllSubscribed() -> [Action] {
        guard self.owesResubscribedNotice, self.channels.values.allSatisfy({ if case .subscribed = $0.phase { true } else { false } }) else {
            return []
        }
        self.owesResubscribedNotice = false
        return [.tellResubscribed]
    }

    /// `node` refused `name`, or the attempt failed; `redirection` when Redis said where it goes.
    /// After `maximumAttempts` in a row a channel that callers wait for is given up and they fail
    /// (they learn it is not subscribed). One no caller waits for (it was subscribed, and its slot
    /// moved or Redis dropped it) is still wanted by its owner, who believes it subscribed: it is
    /// never given up, only retried after a map refresh, once a second.
    mutating func refused(_ name: String, on node: RedisNodeAddress, redirection: RedisRedirection?) -> [Action] {
        guard var channel = self.channels[name], channel.phase == .subscribing(node) else { return [] }
        channel.attempts = min(channel.attempts + 1, self.maximumAttempts)
        channel.phase = .waitingForMaster
        if channel.attempts >= self.maximumAttempts, !channel.waiters.isEmpty {
            self.channels[name] = nil
            return [.fail(channel.waiters)] + self.noticeIfAllSubscribed()
        }
        self.channels[name] = channel
        // Followed at once, until the attempts run out: then (a channel kept for its owner) only
        // after the map's refresh and a second, so two nodes that send it to each other mid-failover
        // do not make a loop at round-trip speed.
        if let redirection, channel.attempts < self.maximumAttempts { return [.followRedirection(redirection, channel: name)] }
        return [.refreshMapAndRetry]
    }

    /// Redis dropped `name` on `node` unasked (its slot moved away): it goes where a fresh map says.
    mutating func dropped(_ name: String, on node: RedisNodeAddress) -> [Action] {
        guard var channel = self.channels[name], channel.phase.node == node else { return [] }
        channel.phase = .waitingForMaster
        self.channels[name] = channel
        self.owesResubscribedNotice = true
        return [.refreshMapAndRetry]
    }

    /// The slot map changed: every channel whose master changed leaves the old one and goes to the new
    /// (or waits, when its slot has no master now). `owner` gives a channel's master in the new map.
    mutating func mapChanged(owner: (String) -> RedisNodeAddress?) -> [Action] {
        var actions: [Action] = []
        for (name, channel) in self.channels {
            let newOwner = owner(name)
            guard newOwner != channel.phase.node else { continue }
            if let old = channel.phase.node {
                actions.append(.unsubscribe(name, from: old))
                if case .subscribed = channel.phase { self.owesResubscribedNotice = true }
            }
            actions += self.place(name, owner: newOwner)
        }
        return actions
    }

    /// The retry timer: every waiting channel is placed where the map now says.
    mutating func retry(owner: (String) -> RedisNodeAddress?) -> [Action] {
        var actions: [Action] = []
        for (name, channel) in self.channels where channel.phase == .waitingForMaster {
            actions += self.place(name, owner: owner(name))
        }
        return actions
    }

    /// The subscriber closes: every waiter fails, nothing is wanted any more.
    mutating func close() -> [Waiter] {
        let waiters = self.channels.values.flatMap(\.waiters)
        self.channels = [:]
        self.owesResubscribedNotice = false
        return waiters
    }
}
