import NIOCore
import NIOPosix
import SwitchboardCore

/// `POST /admin/rebalance` reaching the nodes: `POST /api/rebalance` with the nodes' API key to
/// every available node at once, each on its own connection with a deadline. A node that is over
/// its share then starts a rebalancing round at its next tick without waiting for its hold; the
/// others answer and do nothing. Outcomes are reported per node, never retried.
enum NodeRebalanceRequest {
    /// What one node answered: its status (200: asked; 401: the key is not the node's), or why there is
    /// none (refused, reset, closed early or past the deadline).
    typealias Outcome = HTTPStatusLineHandler.Outcome

    /// Asks every node in `nodes`; the future holds one outcome per node, in order, by `timeout` at the latest.
    static func ask(
        _ nodes: [(node: BackendNode, address: SocketAddress)], key: NodeAPIKey, timeout: TimeAmount, on loop: any EventLoop
    ) -> EventLoopFuture<[(node: String, outcome: Outcome)]> {
        let asks = nodes.map { node, address in
            Self.ask(node, address: address, key: key, timeout: timeout, on: loop).map { (node: node.id, outcome: $0) }
        }
        return EventLoopFuture.whenAllSucceed(asks, on: loop)
    }

    /// The request one node gets.
    static func request(to node: BackendNode, key: NodeAPIKey) -> ByteBuffer {
        ByteBuffer(
            string: "POST /api/rebalance HTTP/1.1\r\nHost: \(node.id)\r\nUser-Agent: switchboard-balancer\r\n"
                + "Authorization: apikey \(key.value)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    private static func ask(_ node: BackendNode, address: SocketAddress, key: NodeAPIKey, timeout: TimeAmount, on loop: any EventLoop)
        -> EventLoopFuture<Outcome>
    {
        let promise = loop.makePromise(of: Outcome.self)
        let deadline = loop.scheduleTask(in: timeout) { promise.succeed(.failed("no answer within the deadline")) }
        deadline.futureResult.whenFailure { _ in promise.succeed(.failed("the balancer is stopping")) }
        let request = Self.request(to: node, key: key)
        ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTPStatusLineHandler(request: request, promise: promise))
                }
            }
            .connect(to: address)
            .whenComplete { result in
                switch result {
                case .failure(let error): promise.succeed(.failed("cannot connect: \(error)"))
                case .success(let channel): promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                }
            }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        return promise.futureResult
    }
}
