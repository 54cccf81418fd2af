import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardAuth
import SwitchboardBroker
import SwitchboardCore

/// What every session and handler of a node shares: configuration, the hub,
/// the broker and the per-loop fan-outs. Immutable after start, except the
/// draining flag.
final class NodeContext: Sendable {
    let configuration: ServerConfiguration
    /// `configuration.trustedProxies` parsed (validated when the configuration was loaded).
    let trustedProxies: TrustedProxySet
    let nodeID: String
    let nodeName: String
    /// The release version reported in `connect` results.
    var version: String { SwitchboardVersion.current }
    let hub: Hub
    let broker: any Broker
    let fanouts: [LoopFanout]
    /// Every key tokens are verified with (configured keys and a JWKS), and the claim rules.
    let tokens: TokenAuthority
    /// Whether permissions are enforced (any token key configured); false: insecure dev mode.
    let enforcesPermissions: Bool
    /// Which pages may connect (`allowedOrigins`).
    let origins: OriginPolicy
    let logger: Logger
    let metrics: NodeMetrics
    let startedAt: NIODeadline
    let connections: ConnectionLimiter
    /// History bytes read per client address (`limits.historyBytesPerSecond`).
    let historyReads: HistoryReadBudgets
    /// Connections per user (`limits.connectionsPerUser`), counted at `connect`.
    private let userConnections: NIOLockedValueBox<UserConnectionCounts>
    private let drainingBox = NIOLockedValueBox(false)
    /// The last registry read for `recentNodes()`, and when it started.
    private let recentNodesBox = NIOLockedValueBox<(startedAt: NIODeadline, nodes: EventLoopFuture<[NodeInfo]>)?>(nil)
    /// When to return freed heap to the system after the connection count falls (`HeapTrimPolicy`).
    private let heapTrim = NIOLockedValueBox(HeapTrimPolicy())
    /// CPU share and event-loop lag for the registry entry (`NodeLoad`), updated at each announce.
    private let load = NIOLockedValueBox(NodeLoad(cores: UsableCores.count()))
    /// Polls waiting now, by `client` field and by client address (entries leave at zero, so
    /// both tables are bounded by the connections the node holds).
    private let polls = NIOLockedValueBox(PollCounts())

    private struct PollCounts {
        var byClient: [String: Int] = [:]
        var byAddress: [String: Int] = [:]
    }

    /// Polls one client may have waiting on this node at once.
    static let maximumPollsPerClient = 2

    init(
        configuration: ServerConfiguration,
        nodeID: String,
        nodeName: String,
        hub: Hub,
        broker: any Broker,
        fanouts: [LoopFanout],
        metrics: NodeMetrics = NodeMetrics(),
        logger: Logger,
        tokens: TokenAuthority? = nil
    ) {
        // The node builds its authority first (`makeTokenAuthority`, whose errors stop the start);
        // tests and hooks pass none and get one from the configuration.
        if let tokens {
            self.tokens = tokens
        } else {
            do {
                self.tokens = try Self.makeTokenAuthority(configuration, logger: logger)
            } catch {
                preconditionFailure("token configuration: \(error)")
            }
        }
        self.enforcesPermissions = self.tokens.hasKeys
        metrics.auth.insecure.record(self.enforcesPermissions ? 0 : 1)
        self.origins = OriginPolicy(configuration.allowedOrigins)
        self.metrics = metrics
        self.configuration = configuration
        self.nodeID = nodeID
        self.nodeName = nodeName
        self.hub = hub
        self.broker = broker
        self.fanouts = fanouts
        self.logger = logger
        self.startedAt = .now()
        self.userConnections = NIOLockedValueBox(UserConnectionCounts(maximumPerUser: configuration.limits.connectionsPerUser))
        self.trustedProxies = (try? TrustedProxySet(configuration.trustedProxies)) ?? TrustedProxySet()
        self.historyReads = HistoryReadBudgets(limits: configuration.limits)
        self.connections = ConnectionLimiter(
            maximum: configuration.maxConnections > 0 ? configuration.maxConnections : ConnectionLimiter.defaultMaximum(),
            maximumPerAddress: configuration.maxConnectionsPerIP,
            connectsPerAddressPerSecond: configuration.limits.connectsPerIPPerSecond
        )
    }

    /// The token keys of a configuration; a short secret, an unreadable key file or a bad JWKS URL
    /// is an error that names the option, never a secret.
    static func makeTokenAuthority(_ configuration: ServerConfiguration, logger: Logger) throws -> TokenAuthority {
        do {
            return try TokenAuthority(settings: configuration.tokens, legacySecret: configuration.tokenSecret, logger: logger)
        } catch {
            throw ConfigurationError(error.description)
        }
    }

    /// Counts a connection of `user` against `limits.connectionsPerUser`: false when the user holds
    /// the maximum on this node (nothing counted); else `releaseUser` must follow at close.
    func admitUser(_ user: String) -> Bool {
        self.userConnections.withLockedValue { $0.admit(user) }
    }

    func releaseUser(_ user: String) {
        self.userConnections.withLockedValue { $0.release(user) }
    }

    /// Stops counting `user`'s connection `connection` in the broker (`Broker.releaseUserConnection`).
    /// Nobody waits; a release that fails is sent again by `retryUserReleases` (releases are
    /// idempotent), so a Redis outage does not leave a user's slot taken for good.
    func releaseUserInBroker(_ user: String, connection: String) {
        self.broker.releaseUserConnection(user: user, connection: connection).whenFailure { error in
            self.logger.debug("per-user connection release failed; will retry", metadata: ["user": "\(user)", "error": "\(error)"])
            let dropped = self.failedUserReleases.withLockedValue { failed -> Bool in
                guard failed.count < Self.maximumFailedUserReleases else { return true }
                failed.append(UserRelease(user: user, connection: connection))
                return false
            }
            if dropped {
                self.logger.warning(
                    "per-user connection release dropped (too many waiting to be sent again): it counts against the user until this node stops",
                    metadata: ["user": "\(user)"])
            }
        }
    }

    /// Sends again (at most `userReleasesPerRetry` of) the broker releases that failed. Called with
    /// every registry announce.
    func retryUserReleases() {
        let batch = self.failedUserReleases.withLockedValue { failed -> [UserRelease] in
            let batch = Array(failed.prefix(Self.userReleasesPerRetry))
            failed.removeFirst(batch.count)
            return batch
        }
        for release in batch { self.releaseUserInBroker(release.user, connection: release.connection) }
    }

    /// The broker could not count a connection per user (it is admitted on this node's count):
    /// counted in `switchboard_user_limit_unchecked_total`, and logged as a warning at most once
    /// per 10 s (a connect storm during a Redis outage must not flood the log).
    func userCountUnavailable(_ error: any Error) {
        self.metrics.userLimitUnchecked.increment()
        let now = NIODeadline.now()
        let warn = self.lastUserCountWarning.withLockedValue { last -> Bool in
            guard last.map({ now - $0 >= .seconds(10) }) ?? true else { return false }
            last = now
            return true
        }
        if warn {
            self.logger.warning(
                "per-user connection count unavailable (limits.connectionsPerUser fails open to this node's count)",
                metadata: ["error": "\(error)"])
        }
    }
    private let lastUserCountWarning = NIOLockedValueBox<NIODeadline?>(nil)

    /// Broker releases waiting to be sent again (the oldest first); bounded.
    private let failedUserReleases = NIOLockedValueBox<[UserRelease]>([])
    /// Past this many failed releases waiting, more are dropped and logged: each then counts against
    /// its user until this node stops and leaves the registry (the broker counts a live node's
    /// entries as held, and a user who keeps connecting keeps the hash from expiring).
    static let maximumFailedUserReleases = 100_000
    static let userReleasesPerRetry = 1_000

    struct UserRelease: Sendable, Hashable {
        var user: String
        var connection: String
    }

    /// Failed broker releases waiting to be sent again (tests).
    var failedUserReleaseCount: Int { self.failedUserReleases.withLockedValue { $0.count } }

    /// Whether connections of `user` are counted per user (no lock: the cap is fixed at start).
    func countsUser(_ user: String) -> Bool {
        self.configuration.limits.connectionsPerUser > 0 && !user.isEmpty
    }

    /// Counts a poll of `client` (may be empty) from `address`; nil when counted, else why not
    /// (and nothing counted). `endPoll` with the same keys must follow.
    func beginPoll(client: String, address: String) -> String? {
        let perAddress = self.trustedProxies.contains(address) ? Int.max : self.configuration.maxPollsPerIP
        return self.polls.withLockedValue { polls in
            let byAddress = polls.byAddress[address, default: 0]
            guard byAddress < perAddress else { return "at most \(perAddress) polls at once per client address" }
            if !client.isEmpty {
                let byClient = polls.byClient[client, default: 0]
                guard byClient < Self.maximumPollsPerClient else { return "at most \(Self.maximumPollsPerClient) polls at once per client" }
                polls.byClient[client] = byClient + 1
            }
            polls.byAddress[address] = byAddress + 1
            return nil
        }
    }

    func endPoll(client: String, address: String) {
        self.polls.withLockedValue { polls in
            if !client.isEmpty, let count = polls.byClient[client] {
                polls.byClient[client] = count > 1 ? count - 1 : nil
            }
            if let count = polls.byAddress[address] {
                polls.byAddress[address] = count > 1 ? count - 1 : nil
            }
        }
    }

    /// Set by the server API's `rebalance`; the node's rebalancing timer takes it at its next tick.
    private let rebalanceRequested = NIOLockedValueBox(false)

    /// Asks the node's rebalancing to start a round at its next tick if the node is over the
    /// tolerance, without waiting for the hold (`POST /api/rebalance`).
    func requestRebalance() {
        self.rebalanceRequested.withLockedValue { $0 = true }
    }

    /// Whether a rebalance was requested since the last call (clears the request).
    func takeRebalanceRequest() -> Bool {
        self.rebalanceRequested.withLockedValue { requested in
            defer { requested = false }
            return requested
        }
    }

    var isDraining: Bool {
        get { self.drainingBox.withLockedValue { $0 } }
    }

    func setDraining() {
        self.drainingBox.withLockedValue { $0 = true }
        self.metrics.draining.record(1)
    }

    /// The address other nodes and balancers reach this node at (set once bound).
    var advertisedAddress: String {
        get { self.addressBox.withLockedValue { $0 } }
        set { self.addressBox.withLockedValue { $0 = newValue } }
    }
    private let addressBox = NIOLockedValueBox("")
    /// Set on the hub's loop by `leaveRegistry`, read there by `announceSelf`.
    private let leftRegistry = NIOLockedValueBox(false)

    /// How often a node refreshes its registry entry.
    static let announceInterval: TimeAmount = .seconds(2)

    /// Returns freed heap memory to the system when the connection count has fallen well below its
    /// recent peak (after a storm or an attack); called every `announceInterval`.
    func trimHeapIfConnectionsFell() {
        let total = self.connections.total
        if self.heapTrim.withLockedValue({ $0.observe(connections: total) }) {
            HeapTrimPolicy.releaseFreeMemory()
        }
    }
    /// Seconds a node stays in the registry without a refresh (three missed refreshes).
    static let registryTTL: Double = 6

    /// Writes this node's current figures to the broker's registry, for `registryTTL` seconds;
    /// nothing once the node left it (`leaveRegistry`).
    func announceSelf() -> EventLoopFuture<Void> {
        let (cpu, lag) = self.measureLoad()
        return self.hub.statistics().flatMap { stats in
            // On the hub's loop, as `leaveRegistry`: an announce that was under way when the node
            // stopped is either sent before the removal or not at all, never after it.
            guard !self.leftRegistry.withLockedValue({ $0 }) else { return self.hub.eventLoop.makeSucceededVoidFuture() }
            let info = NodeInfo(
                id: self.nodeID,
                name: self.nodeName,
                address: self.advertisedAddress,
                connections: stats.connections,
                subscriptions: stats.subscriptions,
                channels: stats.channels,
                uptime: Double((NIODeadline.now() - self.startedAt).nanoseconds) / 1e9,
                draining: self.isDraining,
                weight: self.configuration.weight,
                maxConnections: self.connections.maximum,
                cpu: cpu,
                loopLag: lag
            )
            return self.broker.announce(info, ttl: Self.registryTTL)
        }
    }

    /// Takes this node out of the broker's registry for good (node stop): later announces send nothing.
    func leaveRegistry() -> EventLoopFuture<Void> {
        self.hub.eventLoop.flatSubmit {
            self.leftRegistry.withLockedValue { $0 = true }
            return self.broker.removeNode(id: self.nodeID)
        }
    }

    /// The CPU share since the last announce and the event-loop lag to announce now; starts the
    /// next lag probe (a task queued on every loop, timed when it runs).
    private func measureLoad() -> (cpu: Double?, lag: Double?) {
        let now = Double(NIODeadline.now().uptimeNanoseconds) / 1e9
        let cpuSeconds = ProcessMetrics.cpuSecondsNow()
        let (cpu, lag, probing) = self.load.withLockedValue { load in
            (
                load.cpuShare(cpuSeconds: cpuSeconds, wallSeconds: now), load.lagToAnnounce(wallSeconds: now),
                load.startProbe(loops: self.fanouts.count, wallSeconds: now)
            )
        }
        if probing {
            let queued = NIODeadline.now()
            for fanout in self.fanouts {
                fanout.eventLoop.execute {
                    let lag = Double((NIODeadline.now() - queued).nanoseconds) / 1e9
                    self.load.withLockedValue { $0.recordLag(lag) }
                }
            }
        }
        return (cpu, lag)
    }

    /// The fan-out of the loop a channel runs on.
    func fanout(for eventLoop: any EventLoop) -> LoopFanout {
        for fanout in self.fanouts where fanout.eventLoop === eventLoop { return fanout }
        preconditionFailure("event loop outside the node's group")
    }

    /// The registry's nodes, read from the broker at most once a second whatever the number of
    /// callers: `GET /stats` needs no key, and each read is a scan of the registry in Redis.
    func recentNodes(now: NIODeadline = .now()) -> EventLoopFuture<[NodeInfo]> {
        self.recentNodesBox.withLockedValue { last in
            if let last, now - last.startedAt < .seconds(1) { return last.nodes }
            let nodes = self.broker.nodes()
            last = (now, nodes)
            return nodes
        }
    }
}

extension NodeContext {
    /// The key a client's per-address budgets count under: nil for a trusted proxy's own address
    /// (its clients are not one client), as the per-address connection caps exempt it.
    func budgetKey(forAddress address: String) -> String? {
        guard !address.isEmpty, !self.trustedProxies.contains(address) else { return nil }
        return address
    }

    /// A connection's client address: the one a trusted proxy named (PROXY protocol or
    /// `X-Forwarded-For`, read by `ProxyProtocolHandler`), else the peer's.
    func clientAddress(of channel: any Channel) -> String {
        (try? channel.pipeline.syncOperations.handler(type: ProxyProtocolHandler.self))?.clientAddress
            ?? channel.remoteAddress?.ipText ?? ""
    }
}
