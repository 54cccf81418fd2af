import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RESP
import RedisClient

/// Reads the broker's node registry from Redis every `interval` and makes static ∪ registry the
/// router's member set: a node that announces itself takes connections after the next read, one whose
/// entry expired (TTL 6 s) or that announces `draining` leaves the pick set; open tunnels are never
/// touched. Registry nodes are weighted by what they announce (`RegistryNode.effectiveWeight`), read
/// again at every read. When Redis is unreachable the last known set stays. A node announcing a host
/// name (`serve --advertise name:port`) is looked up on NIO's thread pool, never on an event loop, and
/// takes connections once it resolves; its address is looked up again every
/// `HostNameResolver.timeToLive`.
final class RegistryWatcher: Sendable {
    static let registryKey = "sb:nodes"
    static func nodeKey(_ id: String) -> String { "sb:node:\(id)" }

    private let client: any RedisCommandSender
    private let router: NodeRouter
    private let interval: TimeAmount
    private let logger: Logger
    private let state: NIOLockedValueBox<State>

    private struct State {
        var stopped = false
        var failing = false
        var lastMembers: [BackendNode] = []
        /// The `--node` list (replaced by a reload) and the last registry read.
        var staticNodes: [BackendNode]
        var lastEntries: [RegistryNode] = []
        /// Host names of registry nodes: what to look up, what they resolved to.
        var lookups = HostNameLookups()
    }

    init(
        configuration: RedisConfiguration, eventLoop: any EventLoop, router: NodeRouter, staticNodes: [BackendNode],
        interval: TimeAmount, logger: Logger
    ) {
        self.client = configuration.makeCommandSender(eventLoop: eventLoop, logger: logger)
        self.router = router
        self.state = NIOLockedValueBox(State(staticNodes: staticNodes))
        self.interval = interval
        self.logger = logger
    }

    /// Reads once now, then every interval.
    func start() {
        self.poll()
    }

    /// Takes a reloaded `--node` list (with the addresses its host names resolved to): the member set
    /// becomes it plus the last registry read, at once.
    func setStaticNodes(_ nodes: [BackendNode], resolved: [String: SocketAddress] = [:]) {
        let usesLoad = self.router.algorithm != .hash
        self.state.withLockedValue { state in
            state.staticNodes = nodes
            let members = RegistryMembership.members(
                staticNodes: nodes, registry: state.lastEntries, now: Date().timeIntervalSince1970, usesLoad: usesLoad)
            state.lastMembers = members
            self.router.setMembers(members, resolved: state.lookups.addresses.merging(resolved) { $1 })
        }
    }

    func stop() -> EventLoopFuture<Void> {
        self.state.withLockedValue { $0.stopped = true }
        return self.client.close()
    }

    private func poll() {
        guard !self.state.withLockedValue({ $0.stopped }) else { return }
        let now = Date().timeIntervalSince1970
        self.client.send("ZRANGEBYSCORE", .string(Self.registryKey), .double(now), "+inf", "LIMIT", "0",
            .integer(Int64(RegistryNode.maximumEntries)))
            .flatMap { token -> EventLoopFuture<[RegistryNode]> in
                let ids = (token.array ?? []).compactMap(\.string)
                guard !ids.isEmpty else { return self.client.eventLoop.makeSucceededFuture([]) }
                return self.client.values(of: ids.map(Self.nodeKey)).map { values in
                    values.compactMap { value in
                        value.flatMap { RegistryNode.parse($0.readableBytesView) }
                    }
                }
            }
            .whenComplete { result in
                switch result {
                case .success(let entries):
                    self.take(entries)
                case .failure(let error):
                    let first = self.state.withLockedValue { state -> Bool in
                        defer { state.failing = true }
                        return !state.failing
                    }
                    if first {
                        self.logger.warning(
                            "node registry unreadable, keeping the last known nodes", metadata: ["error": "\(error)"])
                    }
                    self.scheduleNextPoll()
                }
            }
    }

    private func scheduleNextPoll() {
        self.client.eventLoop.scheduleTask(in: self.interval) { self.poll() }
    }

    /// Makes a registry read the member set at once; host names not looked up yet (or due again) are
    /// looked up on the thread pool, and the member set is applied again when they answer. A read never
    /// waits for a lookup, so a slow resolver cannot hold up membership (draining, new nodes).
    private func take(_ entries: [RegistryNode]) {
        let usesLoad = self.router.algorithm != .hash
        let now = NIODeadline.now()
        // The router is told under the watcher's lock, here and when lookups answer (on another
        // thread): the newest member set is always the one applied last.
        let due = self.state.withLockedValue { state -> [BackendNode] in
            if state.failing { self.logger.info("node registry readable again") }
            state.failing = false
            state.lastEntries = entries
            let members = RegistryMembership.members(
                staticNodes: state.staticNodes, registry: entries, now: Date().timeIntervalSince1970, usesLoad: usesLoad)
            let previous = state.lastMembers
            state.lastMembers = members
            let due = state.lookups.due(members: members, now: now)
            self.apply(members, previous: previous, resolved: state.lookups.addresses)
            return due
        }
        self.scheduleNextPoll()
        guard !due.isEmpty else { return }
        // The answers are taken where the lookup ends, not on an event loop: a lookup can outlast
        // the balancer's loops (a resolver may take seconds), and a loop shut down under a promise
        // still to be completed on it is a crash in debug builds and a lost answer in release.
        Task {
            let looked =
                (try? await NIOThreadPool.singleton.runIfActive {
                    due.map { node in (node, try? HostNameResolver.resolve(host: node.host, port: node.port)) }
                }) ?? due.map { ($0, nil) }
            self.takeAnswers(looked, at: NIODeadline.now())
        }
    }

    /// Takes host-name lookups' answers: the member set is applied again with the addresses known
    /// now; a name that stopped resolving is reported once. Nothing is applied after `stop()`.
    private func takeAnswers(_ looked: [(BackendNode, SocketAddress?)], at answered: NIODeadline) {
        let newlyUnresolved = self.state.withLockedValue { state -> [String] in
            let newly = state.lookups.answered(looked.map { (node: $0.0, address: $0.1) }, at: answered)
            guard !state.stopped else { return [] }
            self.router.setMembers(state.lastMembers, resolved: state.lookups.addresses)
            return newly
        }
        for id in newlyUnresolved {
            self.logger.warning(
                "a registry node's host name does not resolve; it takes no connections", metadata: ["node": "\(id)"])
        }
    }

    private func apply(_ members: [BackendNode], previous: [BackendNode], resolved: [String: SocketAddress]) {
        guard members != previous || !resolved.isEmpty else { return }
        self.router.setMembers(members, resolved: resolved)
        guard members != previous else { return }
        let described = members.map(\.description).joined(separator: " ")
        if members.map(\.id) != previous.map(\.id) {
            self.logger.info("nodes from the registry", metadata: ["nodes": "\(described)"])
        } else {
            self.logger.debug("registry weights changed", metadata: ["nodes": "\(described)"])
        }
    }
}
