/// The events of one subscription, in the order they happen (see `SubscriptionEvent`); the
/// sequence ends after `.ended`. Iterate it from one task.
///
/// Events wait in memory until they are read, up to the configuration's `maximumBufferedEvents`: a
/// subscription whose reader falls that far behind ends with `.ended(code: unreadEventsCode, …)`.
public struct ClientSubscription: AsyncSequence, Sendable {
    public typealias Element = SubscriptionEvent

    /// The code of `.ended` when the app left more than `maximumBufferedEvents` events unread. A code
    /// of the client's own, outside the protocol's ranges.
    public static let unreadEventsCode = 4100

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
