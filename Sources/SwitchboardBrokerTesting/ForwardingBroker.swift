public import NIOCore
public import SwitchboardBroker
public import SwitchboardCore

/// A fake broker for node tests, fuzzing and benchmarks: a real `MemoryBroker` behind a class
/// whose methods a test overrides to lose, hold or count what passes (each forwards to the memory
/// broker by default), and through which a harness hands the node events of its own (`deliver`).
///
/// Use it from the thread that runs `eventLoop` (an `EmbeddedEventLoop` in every harness here).
open class ForwardingBroker: Broker, @unchecked Sendable {
    // @unchecked: a test double whose subclasses keep plain state; every caller is on `eventLoop`'s thread.
    /// The broker that does the work.
    public let inner: MemoryBroker
    /// The node's event handler, kept from `start` for `deliver`.
    private let eventHandler: NIOLoopBoundBox<(@Sendable (BrokerEvent) -> Void)?>

    public var eventLoop: any EventLoop { self.inner.eventLoop }

    public required init(eventLoop: any EventLoop) {
        self.inner = MemoryBroker(eventLoop: eventLoop)
        self.eventHandler = .makeEmptyBox(valueType: (@Sendable (BrokerEvent) -> Void).self, eventLoop: eventLoop)
    }

    /// Hands `event` to the node as if the broker had delivered it (on `eventLoop`, after `start`).
    public func deliver(_ event: BrokerEvent) {
        self.eventHandler.value?(event)
    }

    open func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void> {
        self.eventHandler.value = eventHandler
        return self.inner.start(eventHandler: eventHandler)
    }

    open func publish(_ request: PublishRequest) -> EventLoopFuture<PublishResult> { self.inner.publish(request) }
    open func publishPresenceEvent(_ event: PresenceEvent, channel: String) -> EventLoopFuture<Void> {
        self.inner.publishPresenceEvent(event, channel: channel)
    }
    open func subscribe(channel: String) -> EventLoopFuture<Void> { self.inner.subscribe(channel: channel) }
    open func unsubscribe(channel: String) -> EventLoopFuture<Void> { self.inner.unsubscribe(channel: channel) }
    open func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> { self.inner.history(query) }
    open func renewEpoch(channel: String, ifStill epoch: String) -> EventLoopFuture<Void> {
        self.inner.renewEpoch(channel: channel, ifStill: epoch)
    }
    open func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        self.inner.addPresence(channel: channel, clients: clients, ttl: ttl)
    }
    open func removePresence(channel: String, clients: [String]) -> EventLoopFuture<Void> {
        self.inner.removePresence(channel: channel, clients: clients)
    }
    open func presence(channel: String) -> EventLoopFuture<[ClientInfo]> { self.inner.presence(channel: channel) }
    open func announce(_ node: NodeInfo, ttl: Double) -> EventLoopFuture<Void> { self.inner.announce(node, ttl: ttl) }
    open func removeNode(id: String) -> EventLoopFuture<Void> { self.inner.removeNode(id: id) }
    open func nodes() -> EventLoopFuture<[NodeInfo]> { self.inner.nodes() }
    open func acquireUserConnection(user: String, connection: String, node: String, limit: Int) -> EventLoopFuture<Bool> {
        self.inner.acquireUserConnection(user: user, connection: connection, node: node, limit: limit)
    }
    open func releaseUserConnection(user: String, connection: String) -> EventLoopFuture<Void> {
        self.inner.releaseUserConnection(user: user, connection: connection)
    }
    open func sendControl(_ message: ControlMessage, to node: String?) -> EventLoopFuture<Void> {
        self.inner.sendControl(message, to: node)
    }
    /// Stops the memory broker and lets go of the node's event handler, which holds the node (and
    /// through it this broker): kept, it made every node built on this broker a reference cycle,
    /// which the fuzz target's LeakSanitizer reported for every input.
    open func shutdown() -> EventLoopFuture<Void> {
        self.inner.shutdown().map { self.eventHandler.value = nil }
    }
}
