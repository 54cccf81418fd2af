public import NIOCore
import NIOConcurrencyHelpers

/// The node table and the picker, shared by every event loop behind one lock.
///
/// Least connections and bounded-load hashing need the counts of every loop's tunnels, so the table is
/// global; the lock is held for O(nodes) work once per connection event (pick, open, close, failure,
/// health check), never per byte. Also keeps the balancer-wide counters for `/metrics`.
public final class NodeRouter: Sendable {
    /// Balancer-wide counters.
    public struct Counters: Sendable, Hashable {
        public var accepted: UInt64 = 0
        public var open: Int = 0
        public var refusedOverLimit: UInt64 = 0
        public var headTimeouts: UInt64 = 0
        public var badRequests: UInt64 = 0
        public var noNodeAvailable: UInt64 = 0
        public var connectGaveUp: UInt64 = 0
        /// 503s because the balancer itself had no descriptor (or buffer) for the node side.
        public var localResources: UInt64 = 0
        /// 502s for a request not sent again after its node ended the tunnel without answering.
        public var noResponse: UInt64 = 0
        public var tunnels: UInt64 = 0
        /// Tunnels a node closed or reset before answering (its request then went to another node, or got 502).
        public var endedBeforeResponse: UInt64 = 0
        public var tlsHandshakes: UInt64 = 0
        /// Accept to the node's first byte (a WebSocket's `101`), per tunnel.
        public var acceptToFirstByte = LatencyHistogram()
        /// SIGHUP reloads applied and refused.
        public var reloads: UInt64 = 0
        public var reloadsRefused: UInt64 = 0
        /// Picks made by least connections because the nodes' spread was over 1.25 (or a rebalance was asked for).
        public var rebalancePicks: UInt64 = 0
        /// `POST /admin/rebalance` requests.
        public var rebalanceRequests: UInt64 = 0
    }

    private struct State: Sendable {
        var table: NodeTable
        var picker: NodePicker
        var generator = SystemRandomNumberGenerator()
        var counters = Counters()
        /// Where to connect, by node identity; a member without one is not pickable.
        var addresses: [String: SocketAddress] = [:]
        var maxConnections: Int
        /// Until then every non-hash pick goes by least connections (`POST /admin/rebalance`).
        var rebalanceUntil: NIODeadline?
        /// The spread went over 1.25 and has not come down to 1.10 since.
        var rebalancingBySpread = false
    }

    private let state: NIOLockedValueBox<State>

    /// Client connections held at once (changed by a reload).
    public var maxConnections: Int { self.state.withLockedValue { $0.maxConnections } }

    public init(configuration: BalancerConfiguration) {
        let policy = NodeHealth.Policy(rise: configuration.rise, fall: configuration.fall)
        self.state = NIOLockedValueBox(
            State(
                table: NodeTable(nodes: configuration.nodes, healthPolicy: policy),
                picker: NodePicker(
                    algorithm: configuration.algorithm, hashBalanceFactor: configuration.hashBalanceFactor,
                    rebalanceSpread: configuration.rebalanceSpread),
                maxConnections: configuration.maxConnections))
    }

    /// The spread above which non-hash picks go by least connections (`--rebalance-spread`).
    public var rebalanceSpread: Double {
        self.state.withLockedValue { $0.picker.rebalanceSpread }
    }

    /// The algorithm picks are made with.
    public var algorithm: BalancingAlgorithm {
        self.state.withLockedValue { $0.picker.algorithm }
    }

    /// Takes a reloaded configuration's algorithm, bounded-load factor and connection limit. The node
    /// table, its counters and open tunnels are untouched; the picker starts afresh only when its
    /// algorithm or factor changed.
    public func reconfigure(
        algorithm: BalancingAlgorithm, hashBalanceFactor: Double, maxConnections: Int,
        rebalanceSpread: Double = NodePicker.defaultRebalanceSpread
    ) {
        self.state.withLockedValue { state in
            if state.picker.algorithm != algorithm || state.picker.hashBalanceFactor != hashBalanceFactor
                || state.picker.rebalanceSpread != rebalanceSpread
            {
                state.picker = NodePicker(algorithm: algorithm, hashBalanceFactor: hashBalanceFactor, rebalanceSpread: rebalanceSpread)
            }
            state.maxConnections = maxConnections
        }
    }

    /// Takes a client slot; false (counted as a refusal) when `maxConnections` are open.
    public func admitClient() -> Bool {
        self.state.withLockedValue { state in
            guard state.counters.open < state.maxConnections else {
                state.counters.refusedOverLimit &+= 1
                return false
            }
            state.counters.open += 1
            state.counters.accepted &+= 1
            return true
        }
    }

    /// Gives back a slot taken by `admitClient`.
    public func clientClosed() {
        self.state.withLockedValue { $0.counters.open = max(0, $0.counters.open - 1) }
    }

    /// Chooses a node for a connection that has not tried `excluding`, and counts it as active on it.
    public func pick(key: String?, excluding: Set<String>, now: NIODeadline = .now()) -> (
        node: BackendNode, address: SocketAddress
    )? {
        self.state.withLockedValue { state in
            let candidates = state.table.candidates(at: now, excluding: excluding)
            let spread = NodePicker.spread(of: candidates)
            if spread > state.picker.rebalanceSpread {
                state.rebalancingBySpread = true
            } else if spread <= state.picker.rebalancedSpread {
                state.rebalancingBySpread = false
            }
            let rebalancing = state.rebalancingBySpread || (state.rebalanceUntil.map { now < $0 } ?? false)
            if state.picker.picksLeastConnectionsToRebalance(candidates, rebalancing: rebalancing) {
                state.counters.rebalancePicks &+= 1
            }
            guard
                let index = state.picker.pick(from: candidates, key: key, using: &state.generator, rebalancing: rebalancing),
                let node = state.table.entries[candidates[index].id]?.node,
                let address = state.addresses[node.id]
            else { return nil }
            state.table.connectionOpened(node.id)
            return (node, address)
        }
    }

    /// `POST /admin/rebalance`: for `duration`, every non-hash pick goes by least connections whatever
    /// the spread, so the clients the nodes ask to move (close 3002) land on the emptier nodes. Returns
    /// the spread now.
    public func startRebalance(for duration: TimeAmount, now: NIODeadline = .now()) -> Double {
        self.state.withLockedValue { state in
            state.rebalanceUntil = now + duration
            state.counters.rebalanceRequests &+= 1
            return NodePicker.spread(of: state.table.candidates(at: now))
        }
    }

    /// Makes `nodes` the member set (see `NodeTable.setMembers`; counters and open tunnels are kept).
    /// `resolved` gives addresses for host names; IP literals need none. A node with neither is left
    /// out. Returns the members taken.
    @discardableResult
    public func setMembers(_ nodes: [BackendNode], resolved: [String: SocketAddress] = [:]) -> [BackendNode] {
        self.state.withLockedValue { state in
            var taken: [BackendNode] = []
            for node in nodes {
                if let address = resolved[node.id] ?? state.addresses[node.id]
                    ?? (try? SocketAddress(ipAddress: node.host, port: node.port))
                {
                    state.addresses[node.id] = address
                    taken.append(node)
                }
            }
            state.table.setMembers(taken)
            // Forget addresses of nodes that left the table altogether (bounded by the table).
            state.addresses = state.addresses.filter { state.table.entries[$0.key] != nil }
            return taken
        }
    }

    /// Drains or readies a node (admin API); false when the balancer has no such node.
    public func setDrained(_ id: String, _ drained: Bool) -> Bool {
        self.state.withLockedValue { $0.table.setDrained(id, drained) }
    }

    /// Members that may take a new connection now (up, not ejected, not drained), with their
    /// addresses: the nodes `POST /admin/rebalance` asks to rebalance.
    public func availableAddresses(at now: NIODeadline = .now()) -> [(node: BackendNode, address: SocketAddress)] {
        self.state.withLockedValue { state in
            state.table.candidates(at: now).compactMap { candidate in
                guard let node = state.table.entries[candidate.id]?.node, let address = state.addresses[candidate.id] else { return nil }
                return (node, address)
            }
        }
    }

    /// Members with their addresses (for the health checker).
    public var memberAddresses: [(node: BackendNode, address: SocketAddress)] {
        self.state.withLockedValue { state in
            state.table.members.compactMap { node in state.addresses[node.id].map { (node, $0) } }
        }
    }

    /// A connect to `node` that failed for want of the balancer's own resources
    /// (`LocalResourceFailure`): the pick is undone, the node not blamed.
    public func connectAbandoned(_ node: BackendNode) {
        self.state.withLockedValue { $0.table.connectionClosed(node.id) }
    }

    public func connectFailed(_ node: BackendNode, now: NIODeadline = .now()) -> TimeAmount? {
        self.state.withLockedValue { state in
            let ejection = state.table.connectFailed(node.id, at: now)
            state.table.connectionClosed(node.id)
            return ejection
        }
    }

    /// A tunnel to `node` ended before the node's first byte (it accepted, then closed or reset).
    /// `blame`: the request was one the node had no reason to drop, so this is a passive failure like
    /// a refused connect. The tunnel itself was already settled by `tunnelClosed`. Returns the
    /// ejection it caused, if any.
    public func endedBeforeResponse(_ node: BackendNode, blame: Bool, now: NIODeadline = .now()) -> TimeAmount? {
        self.state.withLockedValue { state in
            state.counters.endedBeforeResponse &+= 1
            return blame ? state.table.connectFailed(node.id, at: now) : nil
        }
    }

    public func connectSucceeded(_ node: BackendNode) {
        self.state.withLockedValue {
            $0.table.connectSucceeded(node.id)
            $0.counters.tunnels &+= 1
        }
    }

    /// The node's first byte on a tunnel: `seconds` since the connect started (its response time),
    /// `sinceAccept` since the client was accepted (the histogram), `status` the answer's HTTP status when
    /// it starts with one (a run of server errors ejects the node). Returns the ejection it caused, if any.
    @discardableResult
    public func firstResponse(
        _ node: BackendNode, seconds: Double, sinceAccept: Double? = nil, status: Int? = nil, now: NIODeadline = .now()
    ) -> TimeAmount? {
        self.state.withLockedValue {
            $0.table.recordResponseTime(node.id, seconds: seconds)
            if let sinceAccept { $0.counters.acceptToFirstByte.observe(sinceAccept) }
            guard let status else { return nil }
            return $0.table.recordAnswer(node.id, status: status, at: now)
        }
    }

    /// Counts a configuration reload, applied or refused.
    public func countReload(applied: Bool) {
        self.state.withLockedValue {
            if applied { $0.counters.reloads &+= 1 } else { $0.counters.reloadsRefused &+= 1 }
        }
    }

    public func tunnelClosed(_ node: BackendNode, bytesToNode: UInt64, bytesFromNode: UInt64) {
        self.state.withLockedValue {
            $0.table.connectionClosed(node.id, bytesToNode: bytesToNode, bytesFromNode: bytesFromNode)
        }
    }

    @discardableResult
    public func recordCheck(_ node: BackendNode, succeeded: Bool) -> NodeHealth.Transition? {
        self.state.withLockedValue { $0.table.recordCheck(node.id, succeeded: succeeded) }
    }

    /// Counts a refused request head.
    public func countRefusal(_ kind: RefusalKind) {
        self.state.withLockedValue { state in
            switch kind {
            case .headTimeout: state.counters.headTimeouts &+= 1
            case .badRequest: state.counters.badRequests &+= 1
            case .noNode: state.counters.noNodeAvailable &+= 1
            case .connectGaveUp: state.counters.connectGaveUp &+= 1
            case .noResponse: state.counters.noResponse &+= 1
            case .localResources: state.counters.localResources &+= 1
            }
        }
    }

    /// Counts a completed TLS handshake.
    public func countTLSHandshake() {
        self.state.withLockedValue { $0.counters.tlsHandshakes &+= 1 }
    }

    /// Why a client got an error status instead of a tunnel.
    public enum RefusalKind: Sendable {
        case headTimeout, badRequest, noNode, connectGaveUp, noResponse, localResources
    }

    /// The member nodes now (for the health checker).
    public var members: [BackendNode] { self.state.withLockedValue { $0.table.members } }

    /// A consistent copy of the table and the counters (for the admin API).
    public func snapshot() -> (table: NodeTable, counters: Counters, algorithm: BalancingAlgorithm) {
        self.state.withLockedValue { ($0.table, $0.counters, $0.picker.algorithm) }
    }
}
