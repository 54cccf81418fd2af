import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RESP
import RedisClient

/// Reads the broker's node registry from Redis every `interval` and makes static ∪ registry the
/// router's member set: a node that announces itself takes connections after the next read, one whose
/// entry expired (TTL 6 s) or that announces `draining` leaves the pick set; open tunnels are never
/// touched. Registry nodes are weighted by what they announce (`RegistryNode.effectiveWeight`), read
/// again at every read. When Redis is unreachable the last known set stays.
final class RegistryWatcher: Sendable {
    static let registryKey = "sb:nodes"
    static func nodeKey(_ id: String) -> String { "sb:node:\(id)" }

    private let client: RedisClient
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
    }

    init(
        configuration: RedisConfiguration, eventLoop: any EventLoop, router: NodeRouter, staticNodes: [BackendNode],
        interval: TimeAmount, logger: Logger
    ) {
        self.client = RedisClient(configuration: configuration, eventLoop: eventLoop, logger: logger)
        self.router = router
        self.state = NIOLockedValueBox(State(staticNodes: staticNodes))
        self.interval = interval
        self.logger = logger
    }

    /// Reads once now, then every interval.
    func start() {
        self.poll()
    }

    /// Takes a reloaded `--node` list: the member set becomes it plus the last registry read, at once.
    func setStaticNodes(_ nodes: [BackendNode]) {
        let usesLoad = self.router.algorithm != .hash
        let members = self.state.withLockedValue { state -> [BackendNode] in
            state.staticNodes = nodes
            let members = RegistryMembership.members(
                staticNodes: nodes, registry: state.lastEntries, now: Date().timeIntervalSince1970, usesLoad: usesLoad)
            state.lastMembers = members
            return members
        }
        self.router.setMembers(members)
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
                return self.client.send(["MGET"] + ids.map { .string(Self.nodeKey($0)) }).map { values in
                    (values.array ?? []).compactMap { value in
                        value.bytes.flatMap { RegistryNode.parse($0.readableBytesView) }
                    }
                }
            }
            .whenComplete { result in
                switch result {
                case .success(let entries):
                    let usesLoad = self.router.algorithm != .hash
                    let (members, previous) = self.state.withLockedValue { state -> ([BackendNode], [BackendNode]) in
                        if state.failing { self.logger.info("node registry readable again") }
                        state.failing = false
                        state.lastEntries = entries
                        let members = RegistryMembership.members(
                            staticNodes: state.staticNodes, registry: entries, now: Date().timeIntervalSince1970,
                            usesLoad: usesLoad)
                        defer { state.lastMembers = members }
                        return (members, state.lastMembers)
                    }
                    if members != previous {
                        self.router.setMembers(members)
                        let described = members.map(\.description).joined(separator: " ")
                        if members.map(\.id) != previous.map(\.id) {
                            self.logger.info("nodes from the registry", metadata: ["nodes": "\(described)"])
                        } else {
                            self.logger.debug("registry weights changed", metadata: ["nodes": "\(described)"])
                        }
                    }
                case .failure(let error):
                    let first = self.state.withLockedValue { state -> Bool in
                        defer { state.failing = true }
                        return !state.failing
                    }
                    if first {
                        self.logger.warning(
                            "node registry unreadable, keeping the last known nodes", metadata: ["error": "\(error)"])
                    }
                }
                self.client.eventLoop.scheduleTask(in: self.interval) { self.poll() }
            }
    }
}
