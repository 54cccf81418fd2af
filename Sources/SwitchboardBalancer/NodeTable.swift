public import NIOCore

/// Every node the balancer knows, with its counters and health, keyed by identity (`host:port`).
///
/// Membership changes (`setMembers`) never reset a node's counters: a node that is removed while it
/// still has open tunnels stays in the table (not pickable) until its last tunnel closes, and if it comes
/// back in the meantime its connection count is still right. (APISIX lost its least-conn counts on
/// scale-out; this is the fix.) The table is a value: the data path holds it behind one lock and every
/// method is O(nodes).
public struct NodeTable: Sendable {
    /// One node's row.
    public struct Entry: Sendable {
        public var node: BackendNode
        /// In the configured set (false: removed, kept only while tunnels remain).
        public var isMember: Bool
        /// Connections open or being opened to the node.
        public var active: Int = 0
        public var health: NodeHealth
        /// Counters since the balancer started.
        public var picks: UInt64 = 0
        public var connectFailures: UInt64 = 0
        /// First answers that were server errors (`NodeHealth.isServerFault`).
        public var serverErrors: UInt64 = 0
        public var ejections: UInt64 = 0
        public var bytesToNode: UInt64 = 0
        public var bytesFromNode: UInt64 = 0
        /// Moving average (EWMA, α = 0.2) of connect-to-first-byte in seconds.
        public var responseTime: Double?
        public var checksFailed: UInt64 = 0
        /// Drained through the admin API: no new connections, open tunnels kept, until made ready again.
        public var drained = false
    }

    /// Weight of a new response-time sample in the moving average.
    public static let responseTimeAlpha = 0.2

    public let healthPolicy: NodeHealth.Policy
    public private(set) var entries: [String: Entry] = [:]
    /// Member identities in configuration order (the order pickers see).
    public private(set) var memberOrder: [String] = []

    public init(nodes: [BackendNode], healthPolicy: NodeHealth.Policy = .init()) {
        self.healthPolicy = healthPolicy
        self.setMembers(nodes)
    }

    /// Departed nodes kept only to remember an ejection, at most.
    public static let maximumDepartedKept = 1_024

    /// Makes `nodes` the member set. Known identities keep their counters and health (a changed weight is
    /// taken). New ones take connections after their first good check while a node that stays in the set
    /// can take them meanwhile; otherwise (the balancer is starting, or a reload replaced every node) they
    /// start up, since nothing else could take the clients. Removed ones leave the pick set at once and the
    /// table when their last connection closes; one removed while passively ejected is remembered until
    /// the ejection ends, so leaving and re-joining the registry does not clear it, and a re-joining node
    /// waits for a good check like a new one.
    public mutating func setMembers(_ nodes: [BackendNode], at now: NIODeadline = .now()) {
        let othersServe = nodes.contains { node in
            guard let entry = self.entries[node.id] else { return false }
            return entry.isMember && !entry.drained && entry.health.isAvailable(at: now)
        }
        var order: [String] = []
        var seen = Set<String>()
        for node in nodes where seen.insert(node.id).inserted {
            order.append(node.id)
            if var entry = self.entries[node.id] {
                if !entry.isMember && entry.active == 0 && othersServe { entry.health.awaitFirstCheck() }
                entry.node = node
                entry.isMember = true
                self.entries[node.id] = entry
            } else {
                self.entries[node.id] = Entry(
                    node: node, isMember: true, health: NodeHealth(policy: self.healthPolicy, awaitingFirstCheck: othersServe))
            }
        }
        var departedKept = 0
        for (id, entry) in self.entries where !seen.contains(id) {
            if entry.active > 0 {
                self.entries[id]?.isMember = false
            } else if entry.health.isEjected(at: now) && departedKept < Self.maximumDepartedKept {
                departedKept += 1
                self.entries[id]?.isMember = false
            } else {
                self.entries[id] = nil
            }
        }
        self.memberOrder = order
    }

    /// Members that may take a new connection now, minus `excluding` (nodes this connection already tried).
    public func candidates(at now: NIODeadline, excluding: Set<String> = []) -> [PickCandidate] {
        self.memberOrder.compactMap { id in
            guard let entry = self.entries[id], !excluding.contains(id), !entry.drained, entry.health.isAvailable(at: now)
            else {
                return nil
            }
            return PickCandidate(
                id: id, weight: entry.node.weight, active: entry.active, responseTime: entry.responseTime)
        }
    }

    /// A connection to `id` is being opened: counts as active from now on (so a burst of connects is spread).
    public mutating func connectionOpened(_ id: String) {
        guard self.entries[id] != nil else { return }
        self.entries[id]!.active += 1
        self.entries[id]!.picks &+= 1
    }

    /// A connection to `id` ended (or its connect failed), carrying these byte counts.
    public mutating func connectionClosed(_ id: String, bytesToNode: UInt64 = 0, bytesFromNode: UInt64 = 0) {
        guard var entry = self.entries[id] else { return }
        entry.active = max(0, entry.active - 1)
        entry.bytesToNode &+= bytesToNode
        entry.bytesFromNode &+= bytesFromNode
        if !entry.isMember && entry.active == 0 && !entry.health.isEjected(at: .now()) {
            self.entries[id] = nil
        } else {
            self.entries[id] = entry
        }
    }

    /// A connect to `id` failed (refused, reset, timed out). Ejects it passively unless that would leave
    /// more than half the members ejected (Envoy's panic threshold); returns the ejection's length if
    /// there was one.
    @discardableResult
    public mutating func connectFailed(_ id: String, at now: NIODeadline) -> TimeAmount? {
        guard self.entries[id] != nil else { return nil }
        self.entries[id]!.connectFailures &+= 1
        return self.ejectIfAllowed(id, at: now)
    }

    /// The node's first answer on a tunnel had this status. Ejects it passively (as a failed connect
    /// does) when this completes its run of server errors (`NodeHealth.answered(status:)`); returns the
    /// ejection's length if there was one.
    @discardableResult
    public mutating func recordAnswer(_ id: String, status: Int, at now: NIODeadline) -> TimeAmount? {
        guard self.entries[id] != nil else { return nil }
        if NodeHealth.isServerFault(status) { self.entries[id]!.serverErrors &+= 1 }
        guard self.entries[id]!.health.answered(status: status) else { return nil }
        return self.ejectIfAllowed(id, at: now, cause: .serverErrors)
    }

    private mutating func ejectIfAllowed(
        _ id: String, at now: NIODeadline, cause: NodeHealth.EjectionCause = .connectFailures
    ) -> TimeAmount? {
        guard var entry = self.entries[id], entry.isMember, !entry.health.isEjected(at: now) else { return nil }
        let ejected = self.memberOrder.reduce(0) { $0 + (self.entries[$1]?.health.isEjected(at: now) == true ? 1 : 0) }
        guard (ejected + 1) * 2 <= self.memberOrder.count else { return nil }
        entry.ejections &+= 1
        defer { self.entries[id] = entry }
        return entry.health.eject(at: now, cause: cause)
    }

    /// A connect to `id` succeeded: its ejection backoff starts over.
    public mutating func connectSucceeded(_ id: String) {
        self.entries[id]?.health.connectSucceeded()
    }

    /// The first byte came back from `id` this long after the connect started.
    public mutating func recordResponseTime(_ id: String, seconds: Double) {
        guard seconds.isFinite, seconds >= 0, var entry = self.entries[id] else { return }
        if let previous = entry.responseTime {
            entry.responseTime = previous + Self.responseTimeAlpha * (seconds - previous)
        } else {
            entry.responseTime = seconds
        }
        self.entries[id] = entry
    }

    /// Feeds one active health check's result; returns the transition it caused, if any.
    @discardableResult
    public mutating func recordCheck(_ id: String, succeeded: Bool) -> NodeHealth.Transition? {
        guard var entry = self.entries[id] else { return nil }
        let transition: NodeHealth.Transition?
        if succeeded {
            transition = entry.health.checkSucceeded()
        } else {
            entry.checksFailed &+= 1
            transition = entry.health.checkFailed()
        }
        self.entries[id] = entry
        return transition
    }

    /// Drains (`true`) or readies a node by identity; false when there is no such node.
    @discardableResult
    public mutating func setDrained(_ id: String, _ drained: Bool) -> Bool {
        guard self.entries[id] != nil else { return false }
        self.entries[id]!.drained = drained
        return true
    }

    /// The member nodes, in order.
    public var members: [BackendNode] { self.memberOrder.compactMap { self.entries[$0]?.node } }
}
