import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// Node-side rebalancing after scale-out: one timer per node that feeds a ``RebalancePlanner``
/// this node's session count and the other ready nodes' counts from the broker's registry, and
/// asks the clients the planner releases to move (`disconnect` push and close 3002, which our
/// clients answer by reconnecting through the balancer and recovering their positions).
///
/// Works behind any balancer (HAProxy `leastconn`, nginx `least_conn`, `switchboard balance`):
/// the moved clients' new connections land on the emptier nodes. Only sessions on this node for
/// at least `rebalanceMinAge` seconds (default 10 minutes) are asked, so a client that moved (or
/// arrived) recently is never bounced again.
///
/// Confined to the first event loop: the timer, the planner and the cached registry figures are
/// touched only there; each loop's sessions are asked on their own loop.
final class NodeRebalancer: @unchecked Sendable {
    // @unchecked: its mutable state is touched only on `eventLoop` (its timer runs there).
    private let context: NodeContext
    private let eventLoop: any EventLoop
    private let tickInterval: TimeAmount
    private let minimumAge: TimeAmount
    private var planner: RebalancePlanner
    private var task: RepeatedTask?
    private var ticks = 0
    /// Other ready nodes' connection counts, from the last registry read.
    private var peers: [Int] = []
    /// When the tick in flight started (nil when none): a registry read that never answers must not
    /// stop rebalancing for good, so a tick older than 10 s no longer blocks the next.
    private var busySince: NIODeadline?

    /// Ticks between two registry reads.
    private static let ticksPerRegistryRead = 4

    init(context: NodeContext, tickInterval: TimeAmount = .milliseconds(250)) {
        let configuration = context.configuration
        self.context = context
        self.eventLoop = context.fanouts[0].eventLoop
        self.tickInterval = tickInterval
        self.minimumAge = .milliseconds(Int64(configuration.rebalanceMinAge * 1000))
        self.planner = RebalancePlanner(
            settings: .init(
                tolerance: configuration.rebalanceTolerance, hold: configuration.rebalanceHold,
                window: configuration.rebalanceWindow, rate: configuration.rebalanceRate))
    }

    func start() {
        self.eventLoop.execute {
            guard self.task == nil else { return }
            self.task = self.eventLoop.scheduleRepeatedTask(initialDelay: self.tickInterval, delay: self.tickInterval) { _ in
                self.tick()
            }
        }
    }

    func stop() {
        self.eventLoop.execute {
            self.task?.cancel()
            self.task = nil
        }
    }

    private func tick() {
        let now = NIODeadline.now()
        if let busySince = self.busySince, now - busySince < .seconds(10) { return }
        guard !self.context.isDraining else { return }
        self.busySince = now
        let readRegistry = self.ticks % Self.ticksPerRegistryRead == 0
        self.ticks &+= 1
        let nodeID = self.context.nodeID
        let peersFuture: EventLoopFuture<[Int]?> =
            readRegistry
            ? self.context.recentNodes().map { nodes -> [Int]? in
                nodes.filter { $0.id != nodeID && !$0.draining }.map(\.connections)
            }.recover { _ in nil }.hop(to: self.eventLoop)
            : self.eventLoop.makeSucceededFuture(nil)
        let counts = self.context.fanouts.map { fanout in fanout.eventLoop.submit { fanout.sessionCount } }
        let ownFuture = EventLoopFuture.whenAllSucceed(counts, on: self.eventLoop).map { $0.reduce(0, +) }
        peersFuture.and(ownFuture).whenComplete { result in
            guard case .success(let (peers, own)) = result, self.task != nil else {
                self.busySince = nil
                return
            }
            if let peers { self.peers = peers }  // a failed read keeps the last known figures
            // The tick ends once the asked sessions are counted (`didAsk`): the next one sees them.
            self.apply(own: own, perLoop: counts) { self.busySince = nil }
        }
    }

    private func apply(own: Int, perLoop: [EventLoopFuture<Int>], done: @escaping @Sendable () -> Void) {
        // `POST /api/rebalance`: the next round needs no hold.
        if self.context.takeRebalanceRequest() { self.planner.startNow() }
        let step = self.planner.tick(own: own, peers: self.peers, now: .now())
        let metrics = self.context.metrics
        metrics.rebalanceImbalance.record(step.imbalance)
        if step.startedRound {
            metrics.rebalanceRounds.increment()
            self.context.logger.info(
                "rebalancing: asking clients to move",
                metadata: ["connections": "\(own)", "peers": "\(self.peers)", "imbalance": "\(step.imbalance)"])
        }
        guard step.ask > 0 else { return done() }
        let connectedBefore = NIODeadline.now() - self.minimumAge
        // Each loop gets a share in proportion to its sessions (a loop's shortfall is asked again next tick).
        let fanouts = self.context.fanouts
        EventLoopFuture.whenAllSucceed(perLoop, on: self.eventLoop).flatMap { perLoopCounts in
            let shares = Self.shares(of: step.ask, over: perLoopCounts)
            let asked = zip(fanouts, shares).filter { $0.1 > 0 }.map { fanout, share in
                fanout.eventLoop.submit { fanout.askToMove(upTo: share, connectedBefore: connectedBefore, code: .rebalance) }
            }
            return EventLoopFuture.whenAllSucceed(asked, on: self.eventLoop).map { counts in
                let total = counts.reduce(0, +)
                self.planner.didAsk(total)
                if total > 0 { metrics.rebalanceMovedClients.increment(by: total) }
            }
        }.whenComplete { _ in done() }
    }

    /// `count` split over loops in proportion to `weights` (largest remainders first); all zero when there are none.
    static func shares(of count: Int, over weights: [Int]) -> [Int] {
        let total = weights.reduce(0) { $0 + max(0, $1) }
        guard total > 0, count > 0 else { return weights.map { _ in 0 } }
        let count = min(count, total)
        var shares = weights.map { max(0, $0) * count / total }
        var remainders = weights.indices.map { (index: $0, rest: max(0, weights[$0]) * count % total) }
        remainders.sort { $0.rest > $1.rest }
        var left = count - shares.reduce(0, +)
        for entry in remainders where left > 0 && shares[entry.index] < weights[entry.index] {
            shares[entry.index] += 1
            left -= 1
        }
        return shares
    }
}
