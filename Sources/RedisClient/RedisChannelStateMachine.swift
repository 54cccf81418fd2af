/// One pub/sub channel's subscription on a subscriber connection, kept to match what Redis holds.
///
/// At most one SUBSCRIBE or UNSUBSCRIBE per channel is unconfirmed at a time, so each confirmation
/// from Redis belongs to exactly one transition: an unsubscribe while the SUBSCRIBE is unconfirmed
/// waits for the confirmation and then sends UNSUBSCRIBE; a subscribe while the UNSUBSCRIBE is
/// unconfirmed waits and then sends SUBSCRIBE. A channel is delivered only while `subscribed`.
/// After a lost connection Redis holds nothing: every wanted channel waits for the next one.
/// Modelled on valkey-swift's `ValkeyChannelStateMachine`. A plain value: the subscriber performs
/// the returned actions.
struct RedisChannelStateMachine<Waiter> {
    /// A caller waiting for the subscription to be confirmed, with the id its timeout refers to.
    typealias Entry = (id: UInt64, waiter: Waiter)

    enum State {
        /// Nothing at Redis, nothing wanted (the subscriber drops the machine).
        case unsubscribed
        /// Wanted; no connection to send SUBSCRIBE on yet.
        case pending([Entry])
        /// SUBSCRIBE sent, not yet confirmed.
        case subscribing([Entry])
        /// SUBSCRIBE sent, then unsubscribed before the confirmation: UNSUBSCRIBE goes out when it comes.
        case subscribingThenUnsubscribe([Entry])
        /// Confirmed: messages are delivered.
        case subscribed
        /// UNSUBSCRIBE sent, not yet confirmed.
        case unsubscribing
        /// UNSUBSCRIBE sent, then subscribed again: SUBSCRIBE goes out when the UNSUBSCRIBE is confirmed.
        case unsubscribingThenSubscribe([Entry])
    }

    /// What to send to Redis.
    enum Command: Equatable {
        case subscribe
        case unsubscribe
    }

    /// What the subscriber must do after a transition.
    struct Actions {
        var send: Command?
        var succeed: [Waiter] = []
        var fail: [Waiter] = []

        static var none: Actions { Actions(send: nil) }
    }

    private(set) var state: State = .unsubscribed

    init() {}

    /// Whether messages for the channel are delivered now.
    var isDelivering: Bool {
        if case .subscribed = self.state { return true }
        return false
    }

    /// Whether nothing is wanted nor held at Redis (the machine can be dropped).
    var isUnsubscribed: Bool {
        if case .unsubscribed = self.state { return true }
        return false
    }

    /// Whether a SUBSCRIBE of this channel waits for its confirmation.
    var awaitsSubscribeConfirmation: Bool {
        switch self.state {
        case .subscribing, .subscribingThenUnsubscribe: true
        default: false
        }
    }

    /// Whether a SUBSCRIBE waits for its confirmation and the channel is still wanted.
    var isSubscribingAndWanted: Bool {
        if case .subscribing = self.state { return true }
        return false
    }

    /// Whether the channel was delivering when the connection was lost: waiting for the next one
    /// with no caller, or only the owner's resubscribe entry `id` (kept from a connection lost
    /// again before that entry was confirmed).
    func wasDelivering(resubscribeID id: UInt64) -> Bool {
        guard case .pending(let entries) = self.state else { return false }
        return entries.isEmpty || entries.contains { $0.id == id }
    }

    /// A caller subscribes; `connected` says whether a connection is ready to send on.
    mutating func subscribe(id: UInt64, waiter: Waiter, connected: Bool) -> Actions {
        let entry = (id: id, waiter: waiter)
        switch self.state {
        case .unsubscribed:
            if connected {
                self.state = .subscribing([entry])
                return Actions(send: .subscribe)
            }
            self.state = .pending([entry])
            return .none
        case .pending(let entries):
            self.state = .pending(entries + [entry])
            return .none
        case .subscribing(let entries), .subscribingThenUnsubscribe(let entries):
            // The SUBSCRIBE in flight serves this caller too; a planned UNSUBSCRIBE is dropped.
            self.state = .subscribing(entries + [entry])
            return .none
        case .subscribed:
            return Actions(send: nil, succeed: [waiter])
        case .unsubscribing:
            self.state = .unsubscribingThenSubscribe([entry])
            return .none
        case .unsubscribingThenSubscribe(let entries):
            self.state = .unsubscribingThenSubscribe(entries + [entry])
            return .none
        }
    }

    /// The channel is no longer wanted. Callers still waiting for a SUBSCRIBE that was never sent, or
    /// that was to follow an unconfirmed UNSUBSCRIBE, fail; those of a SUBSCRIBE in flight complete
    /// with its confirmation (which is then followed by UNSUBSCRIBE).
    mutating func unsubscribe() -> Actions {
        switch self.state {
        case .unsubscribed, .subscribingThenUnsubscribe, .unsubscribing:
            return .none
        case .pending(let entries):
            self.state = .unsubscribed
            return Actions(send: nil, fail: entries.map(\.waiter))
        case .subscribing(let entries):
            self.state = .subscribingThenUnsubscribe(entries)
            return .none
        case .subscribed:
            self.state = .unsubscribing
            return Actions(send: .unsubscribe)
        case .unsubscribingThenSubscribe(let entries):
            self.state = .unsubscribing
            return Actions(send: nil, fail: entries.map(\.waiter))
        }
    }

    /// Redis confirmed a SUBSCRIBE of this channel.
    mutating func subscribeConfirmed() -> Actions {
        switch self.state {
        case .subscribing(let entries):
            self.state = .subscribed
            return Actions(send: nil, succeed: entries.map(\.waiter))
        case .subscribingThenUnsubscribe(let entries):
            self.state = .unsubscribing
            return Actions(send: .unsubscribe, succeed: entries.map(\.waiter))
        case .unsubscribed, .pending, .subscribed, .unsubscribing, .unsubscribingThenSubscribe:
            return .none  // not ours to confirm (no SUBSCRIBE of ours is unconfirmed)
        }
    }

    /// Redis confirmed an UNSUBSCRIBE of this channel.
    mutating func unsubscribeConfirmed() -> Actions {
        switch self.state {
        case .unsubscribing:
            self.state = .unsubscribed
            return .none
        case .unsubscribingThenSubscribe(let entries):
            self.state = .subscribing(entries)
            return Actions(send: .subscribe)
        case .unsubscribed, .pending, .subscribing, .subscribingThenUnsubscribe, .subscribed:
            return .none
        }
    }

    /// The caller `id` gave up waiting (its timeout). It is failed and forgotten; when it was the
    /// last caller waiting, the subscription is withdrawn as by `unsubscribe()`, because that caller
    /// now believes the channel is not subscribed.
    mutating func timedOut(id: UInt64) -> Actions {
        func without(_ entries: [Entry]) -> (remaining: [Entry], removed: [Waiter]) {
            (entries.filter { $0.id != id }, entries.filter { $0.id == id }.map(\.waiter))
        }
        switch self.state {
        case .pending(let entries):
            let (remaining, removed) = without(entries)
            self.state = remaining.isEmpty ? .unsubscribed : .pending(remaining)
            return Actions(send: nil, fail: removed)
        case .subscribing(let entries):
            let (remaining, removed) = without(entries)
            self.state = remaining.isEmpty ? .subscribingThenUnsubscribe([]) : .subscribing(remaining)
            return Actions(send: nil, fail: removed)
        case .subscribingThenUnsubscribe(let entries):
            let (remaining, removed) = without(entries)
            self.state = .subscribingThenUnsubscribe(remaining)
            return Actions(send: nil, fail: removed)
        case .unsubscribingThenSubscribe(let entries):
            let (remaining, removed) = without(entries)
            self.state = remaining.isEmpty ? .unsubscribing : .unsubscribingThenSubscribe(remaining)
            return Actions(send: nil, fail: removed)
        case .unsubscribed, .subscribed, .unsubscribing:
            return .none
        }
    }

    /// Redis refused the SUBSCRIBE (a Redis Cluster node that does not serve the channel's slot
    /// answers `MOVED` to `SSUBSCRIBE`): nothing is held, and its callers fail.
    mutating func subscribeRefused() -> Actions {
        switch self.state {
        case .subscribing(let entries), .subscribingThenUnsubscribe(let entries):
            self.state = .unsubscribed
            return Actions(send: nil, fail: entries.map(\.waiter))
        case .unsubscribed, .pending, .subscribed, .unsubscribing, .unsubscribingThenSubscribe:
            return .none
        }
    }

    /// Redis dropped a confirmed subscription on its own (a Redis Cluster node whose slot moved
    /// away sends `sunsubscribe` unasked). Returns whether messages were being delivered, so the
    /// owner subscribes it where the slot is now.
    mutating func droppedByServer() -> Bool {
        guard case .subscribed = self.state else { return false }
        self.state = .unsubscribed
        return true
    }

    /// The connection is gone, and with it every subscription at Redis.
    mutating func connectionLost() -> Actions {
        switch self.state {
        case .unsubscribed, .pending:
            return .none
        case .subscribing(let entries), .unsubscribingThenSubscribe(let entries):
            self.state = .pending(entries)
            return .none
        case .subscribed:
            self.state = .pending([])
            return .none
        case .subscribingThenUnsubscribe(let entries):
            self.state = .unsubscribed
            return Actions(send: nil, fail: entries.map(\.waiter))
        case .unsubscribing:
            self.state = .unsubscribed
            return .none
        }
    }

    /// A new connection is ready: a wanted channel is sent in the batch SUBSCRIBE (returns true).
    /// `extra` replaces any entry with the same id kept from an earlier connection (the owner's own
    /// "resubscribed" waiter, added at each reconnect: counted once per connection, it must be here once).
    mutating func connected(adding extra: [Entry] = []) -> Bool {
        guard case .pending(let entries) = self.state else { return false }
        let replaced = Set(extra.map(\.id))
        self.state = .subscribing(entries.filter { !replaced.contains($0.id) } + extra)
        return true
    }

    /// The subscriber is closed: every waiting caller is returned (to be failed) and nothing is held.
    mutating func close() -> [Waiter] {
        defer { self.state = .unsubscribed }
        switch self.state {
        case .pending(let entries), .subscribing(let entries), .subscribingThenUnsubscribe(let entries),
            .unsubscribingThenSubscribe(let entries):
            return entries.map(\.waiter)
        case .unsubscribed, .subscribed, .unsubscribing:
            return []
        }
    }
}
