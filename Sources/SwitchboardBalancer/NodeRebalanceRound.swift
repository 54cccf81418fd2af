import NIOConcurrencyHelpers
import NIOCore

/// At most one round of `NodeRebalanceRequest`s at a time: a `POST /admin/rebalance` that comes while
/// the nodes are being asked gets that round's answers instead of asking them again. The admin port
/// takes requests from anyone who reaches it; without this, each request opened a connection to every
/// node, so a burst of requests multiplied into connections the nodes had to accept and authenticate.
final class NodeRebalanceRound: Sendable {
    typealias Answers = [(node: String, outcome: NodeRebalanceRequest.Outcome)]

    private let inFlight = NIOLockedValueBox<EventLoopFuture<Answers>?>(nil)

    init() {}

    /// The answers of the round in flight, or of a new round asking `nodes` (each within `timeout`) when
    /// none is; the future completes on `loop`.
    func ask(
        _ nodes: @autoclosure () -> [(node: BackendNode, address: SocketAddress)], key: NodeAPIKey, timeout: TimeAmount,
        on loop: any EventLoop
    ) -> EventLoopFuture<Answers> {
        let (round, promise) = self.inFlight.withLockedValue { current -> (EventLoopFuture<Answers>, EventLoopPromise<Answers>?) in
            if let current { return (current, nil) }
            let promise = loop.makePromise(of: Answers.self)
            current = promise.futureResult
            return (promise.futureResult, promise)
        }
        if let promise {
            promise.futureResult.whenComplete { _ in self.inFlight.withLockedValue { $0 = nil } }
            NodeRebalanceRequest.ask(nodes(), key: key, timeout: timeout, on: loop).cascade(to: promise)
        }
        return round.hop(to: loop)
    }
}
