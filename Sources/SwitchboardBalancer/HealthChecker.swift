import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Active health checks: every node gets `GET <checkPath>` (or, with `checkWebSocket`, a WebSocket
/// upgrade and ping on `/ws`) every check interval, jittered by ±10% so many balancers (or many nodes)
/// do not fall into step. Results go to the router's table, where rise/fall decides whether the node
/// takes new connections. Each check has its own connection and deadline.
final class HealthChecker: Sendable {
    /// What a check asks.
    enum Mode: Sendable, Hashable {
        /// `GET <path>`: the node is up only when it answers `200`.
        case http
        /// A WebSocket upgrade and a ping: the node is up only when it takes the upgrade and pongs.
        case webSocket
    }

    private let router: NodeRouter
    private let group: any EventLoopGroup
    private let interval: TimeAmount
    private let timeout: TimeAmount
    private let path: String
    private let mode: Mode
    private let logger: Logger
    private let stopped = NIOLockedValueBox(false)
    /// Nodes whose check has not finished: a round skips them, so a slow node never has two checks.
    private let inFlight = NIOLockedValueBox(Set<String>())

    init(
        router: NodeRouter, group: any EventLoopGroup, configuration: BalancerConfiguration, logger: Logger
    ) {
        self.router = router
        self.group = group
        self.interval = configuration.checkInterval
        self.timeout = configuration.checkTimeout
        self.path = configuration.checkWebSocket ? "/ws" : configuration.checkPath
        self.mode = configuration.checkWebSocket ? .webSocket : .http
        self.logger = logger
    }

    /// Starts the rounds: every interval (±10%), each member node is checked once, at a random point of
    /// the first tenth of the round, so the nodes' checks do not all leave at the same instant. Members
    /// are read at each round, so nodes added at run time are checked from the next round on.
    func start() {
        self.scheduleRound(in: .zero)
    }

    private func scheduleRound(in delay: TimeAmount) {
        guard !self.stopped.withLockedValue({ $0 }) else { return }
        let loop = self.group.next()
        loop.scheduleTask(in: delay) {
            // Stopped since: the loops are shutting down, and a check scheduled now could land on one closed.
            guard !self.stopped.withLockedValue({ $0 }) else { return }
            let spread = max(1, self.interval.nanoseconds / 10)
            for (node, address) in self.router.memberAddresses {
                guard self.inFlight.withLockedValue({ $0.insert(node.id).inserted }) else { continue }
                let checkLoop = self.group.next()
                checkLoop.scheduleTask(in: .nanoseconds(Int64.random(in: 0...spread))) {
                    self.check(node, address: address, on: checkLoop)
                }
            }
            let jitter = Double.random(in: 0.9...1.1)
            self.scheduleRound(in: .nanoseconds(Int64(Double(self.interval.nanoseconds) * jitter)))
        }
    }

    /// No further checks are started.
    func stop() {
        self.stopped.withLockedValue { $0 = true }
    }

    private func check(_ node: BackendNode, address: SocketAddress, on loop: any EventLoop) {
        guard !self.stopped.withLockedValue({ $0 }) else {
            self.inFlight.withLockedValue { _ = $0.remove(node.id) }
            return
        }
        let promise = loop.makePromise(of: Bool.self)
        // Set when the check could not even open its socket (the balancer's own shortage): no result.
        let noResult = NIOLockedValueBox(false)
        let path = self.path
        let mode = self.mode
        let timeout = loop.scheduleTask(in: self.timeout) { promise.succeed(false) }
        // A loop shut down while the check waits cancels the timer: the check fails, the promise is kept.
        timeout.futureResult.whenFailure { _ in promise.succeed(false) }
        ClientBootstrap(group: loop)
            .connectTimeout(self.timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        Self.handler(mode, path: path, host: node.id, promise: promise))
                }
            }
            .connect(to: address)
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    if LocalResourceFailure.isLocal(error) { noResult.withLockedValue { $0 = true } }
                    promise.succeed(false)
                case .success(let channel): promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                }
            }
        promise.futureResult.whenSuccess { ok in
            timeout.cancel()
            self.inFlight.withLockedValue { _ = $0.remove(node.id) }
            guard !noResult.withLockedValue({ $0 }) else {
                self.logger.warning("health check not made: no resources", metadata: ["node": "\(node.id)"])
                return
            }
            if let transition = self.router.recordCheck(node, succeeded: ok) {
                switch transition {
                case .wentDown: self.logger.warning("node down (health check)", metadata: ["node": "\(node.id)"])
                case .cameUp: self.logger.info("node up (health check)", metadata: ["node": "\(node.id)"])
                }
            }
        }
    }

    /// The request of an HTTP check: the node id as `Host`, and `Connection: close` since one status line
    /// is all the check reads.
    static func httpRequest(path: String, host: String) -> ByteBuffer {
        ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: switchboard-balancer\r\nConnection: close\r\n\r\n")
    }

    /// The handler of one check's connection; it completes `promise` with whether the node is up.
    static func handler(_ mode: Mode, path: String, host: String, promise: EventLoopPromise<Bool>) -> any ChannelHandler {
        switch mode {
        case .http:
            let status = promise.futureResult.eventLoop.makePromise(of: HTTPStatusLineHandler.Outcome.self)
            promise.completeWith(status.futureResult.map { $0 == .status(200) })
            // A check can end without the handler answering (refused connect, deadline): `status` is then
            // completed here, or its pending `map` would keep it alive for good, one leak per such check.
            promise.futureResult.whenComplete { _ in status.succeed(.failed("the check is over")) }
            return HTTPStatusLineHandler(request: Self.httpRequest(path: path, host: host), promise: status)
        case .webSocket:
            return WebSocketHealthCheckHandler(path: path, host: host, promise: promise)
        }
    }
}
