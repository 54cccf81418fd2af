public import Logging
public import NIOCore
public import RESP

/// Commands to a Redis Cluster: each goes to the master serving its key's slot, over one pipelined
/// `RedisClient` per master, all on one event loop.
///
/// The slot map comes from `CLUSTER SLOTS`, asked of the nodes it knows and then of the configured
/// ones, before the first command and again (at most once a second) after a `MOVED` reply or a
/// lost connection, which is how a failover or a resharding is noticed. A `MOVED` reply also fixes
/// the map at once and the command goes to the new master; an `ASK` reply (a slot being migrated)
/// sends the command to the named node once, after `ASKING`. A command that could not be sent at
/// all (its master unreachable) waits for the next map and goes where it says. At most five
/// redirections or such retries per command.
/// Commands wait for the first map (at most `maximumPendingCommands` of them) and fail when no node
/// answers.
///
/// Keys of one call must share a slot (hash tags: `sb:{channel}:s`); a command without keys goes to
/// any master.
public final class RedisClusterClient: RedisCommandSender, @unchecked Sendable {
    // @unchecked: the `var`s are touched only on `eventLoop` (every entry point hops there).
    public let eventLoop: any EventLoop
    public let configuration: RedisConfiguration
    private let logger: Logger

    /// Redirections followed for one command before its last error is returned.
    static let maximumRedirections = 5
    /// Least time between two refreshes of the slot map.
    static let minimumRefreshInterval: TimeAmount = .seconds(1)
    /// Commands whose first argument is not a key.
    static let keylessCommands: Set<String> = ["PUBLISH", "PING", "ECHO", "INFO", "CLUSTER", "TIME", "SCRIPT", "DBSIZE", "CONFIG", "CLIENT"]

    /// A command on its way, with what routes it.
    private struct Routed {
        var command: RedisCommand
        /// nil for a command without keys.
        var slot: UInt16?
        var receiver: RedisPendingReply.Receiver
        var redirections = 0
    }

    // Confined to `eventLoop`.
    private var map: RedisClusterSlotMap?
    private var clients: [RedisNodeAddress: RedisClient] = [:]
    private var waiting: [Routed] = []
    private var refresh = RedisSlotMapRefresh(minimumInterval: RedisClusterClient.minimumRefreshInterval)
    private var closed = false
    private var observers: [(RedisClusterSlotMap) -> Void] = []

    /// - Parameter configuration: a cluster configuration (`clusterNodes` not empty); its
    ///   credentials, TLS settings, timeouts and limits apply to every node.
    public init(configuration: RedisConfiguration, eventLoop: any EventLoop, logger: Logger) {
        precondition(configuration.isCluster, "a cluster client needs cluster nodes")
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
    }

    // MARK: Sending

    public func send(_ arguments: [RESPArgument]) -> EventLoopFuture<RESPToken> {
        let promise = self.eventLoop.makePromise(of: RESPToken.self)
        let slot = Self.slot(of: arguments)
        self.submit(Routed(command: .arguments(arguments), slot: slot, receiver: .promise(promise)))
        return promise.futureResult
    }

    public func evaluate(_ script: RedisScript, keys: [String], arguments: [RESPArgument]) -> EventLoopFuture<RESPToken> {
        let tail = RESPArgumentList.script(keys: keys, arguments: arguments)
        let promise = self.eventLoop.makePromise(of: RESPToken.self)
        let slot = keys.first.map { RedisHashSlot.slot(of: $0) }
        self.submit(Routed(command: .script(script, tail, bySHA: true), slot: slot, receiver: .promise(promise)))
        return promise.futureResult
    }

    public func evaluate(
        _ script: RedisScript, _ keysAndArguments: RESPArgumentList, slot: () -> UInt16,
        onReply: @escaping @Sendable (Result<RESPToken, RedisError>) -> Void
    ) {
        self.submit(Routed(command: .script(script, keysAndArguments, bySHA: true), slot: slot(), receiver: .callback(onReply)))
    }

    public func close() -> EventLoopFuture<Void> {
        self.eventLoop.flatSubmit {
            self.closed = true
            self.failWaiting(RedisError(.connectionClosed, "client closed"))
            let clients = Array(self.clients.values)
            self.clients.removeAll()
            return EventLoopFuture.andAllComplete(clients.map { $0.close() }, on: self.eventLoop)
        }
    }

    /// The slot map as last read or corrected (nil before the first read), for tests.
    public var slotMap: EventLoopFuture<RedisClusterSlotMap?> {
        self.eventLoop.submit { self.map }
    }

    /// The slot map now, on `eventLoop` (nil before the first read).
    var currentSlotMap: RedisClusterSlotMap? {
        self.eventLoop.assertInEventLoop()
        return self.map
    }

    /// Calls `observer` on `eventLoop` with every new map (after a read that changed it, and after
    /// a `MOVED` correction).
    func observeSlotMap(_ observer: @escaping (RedisClusterSlotMap) -> Void) {
        self.eventLoop.assertInEventLoop()
        self.observers.append(observer)
    }

    /// Reads the slot map again soon (at most once a second), e.g. after a subscriber lost its node.
    func refreshSlotMap() {
        self.eventLoop.assertInEventLoop()
        self.refreshSlots()
    }

    /// Records a `MOVED` heard elsewhere (by a subscriber) and reads the map again soon.
    func noteMoved(_ redirection: RedisRedirection) {
        self.eventLoop.assertInEventLoop()
        self.moved(redirection)
    }

    private func moved(_ redirection: RedisRedirection) {
        guard var map = self.map, map.node(forSlot: redirection.slot) != redirection.address else {
            return self.refreshSlots()
        }
        map.assign(redirection.slot, to: redirection.address)
        self.map = map
        self.refreshSlots()
        for observer in self.observers { observer(map) }
    }

    /// The slot of a command's first key; nil for a command without keys.
    static func slot(of arguments: [RESPArgument]) -> UInt16? {
        guard arguments.count >= 2 else { return nil }
        if case .string(let name) = arguments[0], Self.keylessCommands.contains(name.uppercased()) { return nil }
        switch arguments[1] {
        case .string(let key): return RedisHashSlot.slot(of: key)
        case .bytes(let key): return RedisHashSlot.slot(ofBytes: key.readableBytesView)
        case .integer(let key): return RedisHashSlot.slot(of: String(key))
        case .double(let key): return RedisHashSlot.slot(of: "\(key)")
        }
    }

    // MARK: Routing

    private func submit(_ routed: Routed) {
        if self.eventLoop.inEventLoop {
            self.route(routed)
        } else {
            self.eventLoop.execute { self.route(routed) }
        }
    }

    private func route(_ routed: Routed) {
        guard !self.closed else {
            return routed.receiver.complete(.failure(RedisError(.connectionClosed, "client closed")))
        }
        guard let map = self.map else {
            guard self.waiting.count < self.configuration.maximumPendingCommands else {
                return routed.receiver.complete(.failure(RedisError(.overloaded, "\(self.waiting.count) commands already waiting for the Redis Cluster's slot map")))
            }
            self.waiting.append(routed)
            self.refreshSlots()
            return
        }
        let owner = routed.slot.flatMap { map.node(forSlot: $0) }
        if routed.slot != nil, owner == nil { self.refreshSlots() }  // a slot nobody serves: the map may be old
        let address = owner ?? map.nodes.first ?? self.configuration.clusterNodes[0]
        self.send(routed, to: address, command: routed.command)
    }

    private func send(_ routed: Routed, to address: RedisNodeAddress, command: RedisCommand) {
        self.client(address).submit(command, receiver: .callback { result in
            self.answered(routed, by: address, result)
        })
    }

    private func answered(_ routed: Routed, by address: RedisNodeAddress, _ result: Result<RESPToken, RedisError>) {
        self.eventLoop.assertInEventLoop()
        guard case .failure(let error) = result else { return routed.receiver.complete(result) }
        if error.code == .server, var redirection = RedisRedirection(errorMessage: error.message),
            routed.redirections < Self.maximumRedirections, !self.closed
        {
            if redirection.address.host.isEmpty { redirection.address.host = address.host }
            var next = routed
            next.redirections += 1
            switch redirection.kind {
            case .moved:
                self.moved(redirection)
                self.send(next, to: redirection.address, command: routed.command)
            case .ask:
                // Only this command goes there, right after ASKING on the same connection; a script
                // goes by source, since a NOSCRIPT fallback would lose the ASKING before it.
                let client = self.client(redirection.address)
                client.submit(.arguments(["ASKING"]), receiver: .callback { _ in })
                self.send(next, to: redirection.address, command: routed.command.byScriptSource ?? routed.command)
            }
            return
        }
        if error.wasNotSent, routed.redirections < Self.maximumRedirections, !self.closed, self.map != nil,
            self.waiting.count < self.configuration.maximumPendingCommands
        {
            // The master could not be reached and the command never left: it waits for a fresh
            // slot map (a replica may have taken over) and goes where that says.
            var next = routed
            next.redirections += 1
            self.waiting.append(next)
            self.refreshSlots()
            return
        }
                if error.code == .connectionClosed || error.code == .timeout || error.isClusterUnavailable {
            self.refreshSlots()  // a master lost: its replica may have taken over
        }
        routed.receiver.complete(result)
    }

    private func client(_ address: RedisNodeAddress) -> RedisClient {
        if let client = self.clients[address] { return client }
        let client = RedisClient(configuration: self.configuration.node(address), eventLoop: self.eventLoop, logger: self.logger)
        self.clients[address] = client
        return client
    }

    private func failWaiting(_ error: RedisError) {
        let waiting = self.waiting
        self.waiting.removeAll()
        for routed in waiting { routed.receiver.complete(.failure(error)) }
    }

    // MARK: The slot map

    /// Reads the slot map now, or once `minimumRefreshInterval` has passed since the last read began.
    private func refreshSlots() {
        guard !self.closed else { return }
        self.perform(self.refresh.requested(now: .now()))
    }

    private func perform(_ action: RedisSlotMapRefresh.Action) {
        switch action {
        case .none:
            break
        case .schedule(let deadline):
            self.eventLoop.scheduleTask(deadline: deadline) {
                guard !self.closed else { return }
                self.perform(self.refresh.timerFired(now: .now()))
            }
        case .read:
            var candidates = self.map?.nodes ?? []
            for node in self.configuration.clusterNodes where !candidates.contains(node) { candidates.append(node) }
            self.readSlots(from: candidates[...], lastError: nil)
        }
    }

    /// Asks each candidate in turn until one answers.
    private func readSlots(from candidates: ArraySlice<RedisNodeAddress>, lastError: (any Error)?) {
        guard !self.closed else { return }
        guard let address = candidates.first else {
            self.refresh.finished()
            let error = RedisError(.connectionClosed, "no Redis Cluster node answered CLUSTER SLOTS (\(lastError.map { "\($0)" } ?? "none listed"))")
            self.logger.warning("redis cluster slot map not read", metadata: ["error": "\(error.message)"])
            self.failWaiting(error)
            return
        }
        self.client(address).submit(.arguments(["CLUSTER", "SLOTS"]), receiver: .callback { result in
            do {
                let map = try RedisClusterSlotMap(slotsReply: result.get(), answeredBy: address)
                guard !map.nodes.isEmpty else { throw RedisError(.server, "CLUSTER SLOTS: no slot served") }
                self.installed(map)
            } catch {
                self.readSlots(from: candidates.dropFirst(), lastError: error)
            }
        })
    }

    private func installed(_ map: RedisClusterSlotMap) {
        guard !self.closed else { return }
        let changed = self.map != map
        if changed {
            self.logger.debug("redis cluster slot map", metadata: ["masters": "\(map.nodes.map(\.description))", "complete": "\(map.coversAllSlots)"])
        }
        self.map = map
        self.refresh.finished()
        // Connections to nodes that serve nothing now (and are not configured) are closed.
        for (address, client) in self.clients where !map.nodes.contains(address) && !self.configuration.clusterNodes.contains(address) {
            self.clients[address] = nil
            _ = client.close()
        }
        let waiting = self.waiting
        self.waiting.removeAll()
        for routed in waiting { self.route(routed) }
        if changed {
            for observer in self.observers { observer(map) }
        }
    }
}

extension RedisError {
    /// A cluster's answer that it cannot serve the command right now (`CLUSTERDOWN`, `TRYAGAIN`
    /// during a resharding, `MASTERDOWN`, `LOADING`), or a redirection left unfollowed.
    public var isClusterUnavailable: Bool {
        guard self.code == .server else { return false }
        for prefix in ["CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING", "MOVED", "ASK "] where self.message.hasPrefix(prefix) {
            return true
        }
        return false
    }
}
