import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// A memory broker behind a class whose methods tests override to lose, hold or
/// count what passes (every method forwards to the real broker by default).
class ForwardingBroker: Broker, @unchecked Sendable {
    let inner: MemoryBroker
    var eventLoop: any EventLoop { self.inner.eventLoop }

    required init(eventLoop: any EventLoop) {
        self.inner = MemoryBroker(eventLoop: eventLoop)
    }

    func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void> { self.inner.start(eventHandler: eventHandler) }
    func publish(_ request: PublishRequest) -> EventLoopFuture<PublishResult> { self.inner.publish(request) }
    func publishPresenceEvent(_ event: PresenceEvent, channel: String) -> EventLoopFuture<Void> {
        self.inner.publishPresenceEvent(event, channel: channel)
    }
    func subscribe(channel: String) -> EventLoopFuture<Void> { self.inner.subscribe(channel: channel) }
    func unsubscribe(channel: String) -> EventLoopFuture<Void> { self.inner.unsubscribe(channel: channel) }
    func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> { self.inner.history(query) }
    func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        self.inner.addPresence(channel: channel, clients: clients, ttl: ttl)
    }
    func removePresence(channel: String, client: String) -> EventLoopFuture<Void> {
        self.inner.removePresence(channel: channel, client: client)
    }
    func presence(channel: String) -> EventLoopFuture<[ClientInfo]> { self.inner.presence(channel: channel) }
    func announce(_ node: NodeInfo, ttl: Double) -> EventLoopFuture<Void> { self.inner.announce(node, ttl: ttl) }
    func removeNode(id: String) -> EventLoopFuture<Void> { self.inner.removeNode(id: id) }
    func nodes() -> EventLoopFuture<[NodeInfo]> { self.inner.nodes() }
    func sendControl(_ message: ControlMessage, to node: String?) -> EventLoopFuture<Void> {
        self.inner.sendControl(message, to: node)
    }
    func shutdown() -> EventLoopFuture<Void> { self.inner.shutdown() }
}
