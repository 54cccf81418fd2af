/// A node's subscription to one channel at the broker, as a state machine.
///
/// The hub subscribes a channel at the broker when its first local subscriber
/// joins and unsubscribes when the last one leaves, but both calls take a
/// round trip, and subscribers come and go meanwhile. Every case has a state
/// here, so what the node holds at the broker always matches what it thinks:
/// a leave while the subscribe is in flight unsubscribes once it completes,
/// and a join while the unsubscribe is in flight subscribes again after it.
/// (valkey-swift's `ValkeyChannelStateMachine` is the model.)
///
/// Methods take events and return what the hub must do; nothing here does I/O.
public struct BrokerSubscription: Hashable, Sendable {
    public enum State: Hashable, Sendable {
        case unsubscribed
        /// `SUBSCRIBE` sent; `wanted` is false once every local subscriber has left meanwhile.
        case subscribing(wanted: Bool)
        case subscribed
        /// `UNSUBSCRIBE` sent; `wanted` is true once a local subscriber has come meanwhile.
        case unsubscribing(wanted: Bool)
    }

    /// What the hub does after an event.
    public enum Action: Hashable, Sendable {
        case none
        /// Send the broker subscribe.
        case subscribe
        /// Send the broker unsubscribe.
        case unsubscribe
        /// The channel is live at the broker: go on with the joins waiting for it.
        case joinWaiting
        /// The subscribe failed while subscribers wait: refuse their joins.
        case failWaiting
    }

    public private(set) var state: State = .unsubscribed

    public init() {}

    /// The node holds the channel at the broker and wants it.
    public var isSubscribed: Bool { self.state == .subscribed }

    /// Nothing is held or in flight: the channel's record may go.
    public var isIdle: Bool { self.state == .unsubscribed }

    /// A local subscriber wants the channel (its first, or one arriving while the node is leaving).
    public mutating func want() -> Action {
        switch self.state {
        case .unsubscribed:
            self.state = .subscribing(wanted: true)
            return .subscribe
        case .subscribing:
            self.state = .subscribing(wanted: true)
            return .none
        case .subscribed:
            return .none
        case .unsubscribing:
            self.state = .unsubscribing(wanted: true)
            return .none
        }
    }

    /// No local subscriber (member or pending join) is left.
    public mutating func release() -> Action {
        switch self.state {
        case .unsubscribed:
            return .none
        case .subscribing:
            self.state = .subscribing(wanted: false)
            return .none
        case .subscribed:
            self.state = .unsubscribing(wanted: false)
            return .unsubscribe
        case .unsubscribing:
            self.state = .unsubscribing(wanted: false)
            return .none
        }
    }

    public mutating func subscribeSucceeded() -> Action {
        switch self.state {
        case .subscribing(wanted: true):
            self.state = .subscribed
            return .joinWaiting
        case .subscribing(wanted: false):
            self.state = .unsubscribing(wanted: false)
            return .unsubscribe
        case .unsubscribed, .subscribed, .unsubscribing:
            return .none
        }
    }

    public mutating func subscribeFailed() -> Action {
        switch self.state {
        case .subscribing(let wanted):
            self.state = .unsubscribed
            return wanted ? .failWaiting : .none
        case .unsubscribed, .subscribed, .unsubscribing:
            return .none
        }
    }

    /// The unsubscribe completed (or failed: the broker link then drops the channel itself on reconnect).
    public mutating func unsubscribeCompleted() -> Action {
        switch self.state {
        case .unsubscribing(wanted: true):
            self.state = .subscribing(wanted: true)
            return .subscribe
        case .unsubscribing(wanted: false):
            self.state = .unsubscribed
            return .none
        case .unsubscribed, .subscribing, .subscribed:
            return .none
        }
    }
}
