import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Active health checks: every node gets `GET /readyz` every check interval, jittered by ±10% so many
/// balancers (or many nodes) do not fall into step. Results go to the router's table, where rise/fall
/// decides whether the node takes new connections. Each check has its own connection and deadline.
final class HealthChecker: Sendable {
    private let router: NodeRouter
    private let group: any EventLoopGroup
    private let addresses: [String: SocketAddress]
    private let interval: TimeAmount
    private let timeout: TimeAmount
    private let path: String
    private let logger: Logger
    private let stopped = NIOLockedValueBox(false)

    init(
        router: NodeRouter, group: any EventLoopGroup, addresses: [String: SocketAddress],
        configuration: BalancerConfiguration, logger: Logger
    ) {
        self.router = router
        self.group = group
        self.addresses = addresses
        self.interval = configuration.checkInterval
        self.timeout = min(configuration.checkTimeout, configuration.checkInterval)
        self.path = configuration.checkPath
        self.logger = logger
    }

    /// Starts one check cycle per member node, the first at a random point of the first interval.
    func start() {
        for node in self.router.members {
            let loop = self.group.next()
            let first = TimeAmount.nanoseconds(Int64.random(in: 0...max(1, self.interval.nanoseconds)))
            self.schedule(node, on: loop, in: first)
        }
    }

    /// No further checks are started.
    func stop() {
        self.stopped.withLockedValue { $0 = true }
    }

    private func schedule(_ node: BackendNode, on loop: any EventLoop, in delay: TimeAmount) {
        guard !self.stopped.withLockedValue({ $0 }) else { return }
        loop.scheduleTask(in: delay) {
            self.check(node, on: loop)
        }
    }

    private func check(_ node: BackendNode, on loop: any EventLoop) {
        guard !self.stopped.withLockedValue({ $0 }), let address = self.addresses[node.id] else { return }
        let promise = loop.makePromise(of: Bool.self)
        let path = self.path
        let timeout = loop.scheduleTask(in: self.timeout) { promise.succeed(false) }
        ClientBootstrap(group: loop)
            .connectTimeout(self.timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        HealthCheckHandler(path: path, host: node.id, promise: promise))
                }
            }
            .connect(to: address)
            .whenComplete { result in
                switch result {
                case .failure: promise.succeed(false)
                case .success(let channel): promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                }
            }
        promise.futureResult.whenSuccess { ok in
            timeout.cancel()
            if let transition = self.router.recordCheck(node, succeeded: ok) {
                switch transition {
                case .wentDown: self.logger.warning("node down (health check)", metadata: ["node": "\(node.id)"])
                case .cameUp: self.logger.info("node up (health check)", metadata: ["node": "\(node.id)"])
                }
            }
            let jitter = Double.random(in: 0.9...1.1)
            self.schedule(node, on: loop, in: .nanoseconds(Int64(Double(self.interval.nanoseconds) * jitter)))
        }
    }
}
