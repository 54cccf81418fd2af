/// The events of one subscription, in the order they happen (see `SubscriptionEvent`); the
/// sequence ends after `.ended`. Iterate it from one task.
///
/// Events wait in memory until they are read: a subscriber that stops reading while messages keep
/// coming holds them all.
public struct ClientSubscription: AsyncSequence, Sendable {
    public typealias Element = SubscriptionEvent

    /// The channel.
    public let channel: String
    private let events: AsyncStream<SubscriptionEvent>

    init(channel: String, events: AsyncStream<SubscriptionEvent>) {
        self.channel = channel
        self.events = events
    }

    public func makeAsyncIterator() -> AsyncStream<SubscriptionEvent>.Iterator {
        self.events.makeAsyncIterator()
    }
}
