import SwitchboardCore

/// One node as the broker's registry describes it (`sb:node:<id>`, written by every `serve --broker
/// redis://…` node every 2 s with a 6 s TTL).
public struct RegistryNode: Sendable, Hashable {
    public var id: String
    /// Where the node listens, as a `BackendNode` (its weight is the announced one; see `effectiveWeight`).
    public var node: BackendNode
    /// The node is draining: it leaves the pick set at once.
    public var draining: Bool
    public var connections: Int
    /// Most connections the node takes (0: not said).
    public var maxConnections: Int
    /// When the entry was written, seconds since 1970 (nil: not said).
    public var announcedAt: Double?
    /// The share of its cores the node used over its last announce interval, 0-1 (nil: not said).
    public var cpu: Double?
    /// How late, in seconds, a task ran on the node's most loaded event loop (nil: not said).
    public var loopLag: Double?

    public init(
        id: String, node: BackendNode, draining: Bool, connections: Int, maxConnections: Int = 0, announcedAt: Double? = nil,
        cpu: Double? = nil, loopLag: Double? = nil
    ) {
        self.id = id
        self.node = node
        self.draining = draining
        self.connections = connections
        self.maxConnections = maxConnections
        self.announcedAt = announcedAt
        self.cpu = cpu
        self.loopLag = loopLag
    }

    /// Most registry entries the balancer takes from one read.
    public static let maximumEntries = 1000

    /// A load report older (or further in the future) than this is not used: the node announces every
    /// 2 s, so it missed two announces, or the clocks of the node's broker and this balancer disagree.
    public static let staleAfterSeconds = 5.0

    /// A CPU share up to which a node's CPU does not lower its weight (light use says nothing about
    /// how much more the node can take, and would make weights jitter); from there to all its cores
    /// busy, the weight falls to 1.
    public static let cpuFloor = 0.5
    /// An event-loop lag up to which a node counts as unhurried (a loop busy with a burst of work).
    public static let loopLagFloorSeconds = 0.025
    /// An event-loop lag at which a node counts as full: its loops run every task a quarter of a
    /// second late, so each new client would wait at least that for every answer.
    public static let fullLoopLagSeconds = 0.25

    /// Parses one registry value (`{"id", "address": "host:port", "draining", "connections",
    /// "maxConnections", "weight", "at", "cpu", "lag", …}`); nil when it is not JSON, has no usable address,
    /// or names a wildcard address (`0.0.0.0`, `::`), which a node bound to all interfaces advertises and
    /// nobody can connect to. A weight outside 1-100 is clamped into it; negative counts read as 0; a CPU
    /// share is clamped into 0-1 and a lag into 0-3600 s; a figure that is not a finite number is left out.
    public static func parse(_ bytes: some Collection<UInt8>) -> RegistryNode? {
        guard bytes.count <= 64 * 1024, let json = try? JSONParser(maximumDepth: 8, maximumValues: 1000).parse(bytes),
            let id = json["id"]?.stringValue, let address = json["address"]?.stringValue,
            var node = try? BackendNode.parse(address), node.host != "0.0.0.0", node.host != "::"
        else { return nil }
        node.weight = min(BackendNode.maximumWeight, max(1, json["weight"]?.intValue ?? 1))
        let at = json["at"]?.doubleValue
        return RegistryNode(
            id: id, node: node, draining: json["draining"]?.boolValue ?? false,
            connections: max(0, json["connections"]?.intValue ?? 0),
            maxConnections: max(0, json["maxConnections"]?.intValue ?? 0),
            announcedAt: at.flatMap { $0.isFinite ? $0 : nil },
            cpu: json["cpu"]?.doubleValue.flatMap { $0.isFinite ? min(1, max(0, $0)) : nil },
            loopLag: json["lag"]?.doubleValue.flatMap { $0.isFinite ? min(3600, max(0, $0)) : nil })
    }

    /// The weight the balancer gives the node at `now` (seconds since 1970): its announced weight times
    /// the share of the node still free, rounded, at least 1, where the node's use is the highest of the
    /// figures it reports, each at most 1:
    ///
    ///     used = max(connections ÷ maxConnections, (cpu − 0.5) ÷ 0.5, (lag − 0.025 s) ÷ 0.225 s)
    ///     max(1, round(weight × (1 − used)))
    ///
    /// A weight-10 node half full of connections counts as 5, nine tenths full as 1; one using three
    /// quarters of its cores counts as 5 (up to half its cores, CPU does not count); one whose loops run
    /// tasks 137 ms late counts as 5 (up to 25 ms, lag does not count). The announced weight alone is used
    /// when the report is stale (see `staleAfterSeconds`), has none of the three figures, or `usesLoad` is
    /// false (hashing: a weight that moves with load would move keys between nodes every read). Load
    /// lowers a weight only as finely as the weight allows: a weight-1 node stays 1.
    public func effectiveWeight(now: Double, usesLoad: Bool) -> Int {
        let weight = self.node.weight
        guard usesLoad, let at = self.announcedAt, abs(now - at) <= Self.staleAfterSeconds else { return weight }
        var used: Double?
        if self.maxConnections > 0 {
            used = min(1, Double(self.connections) / Double(self.maxConnections))
        }
        if let cpu = self.cpu {
            used = max(used ?? 0, Self.share(cpu, from: Self.cpuFloor, to: 1))
        }
        if let lag = self.loopLag {
            used = max(used ?? 0, Self.share(lag, from: Self.loopLagFloorSeconds, to: Self.fullLoopLagSeconds))
        }
        guard let used else { return weight }
        return max(1, Int((Double(weight) * (1 - used)).rounded()))
    }

    /// Where `value` lies between `floor` (0) and `full` (1), clamped to 0-1.
    private static func share(_ value: Double, from floor: Double, to full: Double) -> Double {
        min(1, max(0, (value - floor) / (full - floor)))
    }
}

/// The pick set from the static `--node` list and the registry: static nodes first (in their order),
/// then registry nodes by id, weighted by `RegistryNode.effectiveWeight`; a registry node at the address
/// of a static one does not double it (the static weight stands); draining registry nodes are left out.
public enum RegistryMembership {
    public static func members(
        staticNodes: [BackendNode], registry: [RegistryNode], now: Double = 0, usesLoad: Bool = false
    ) -> [BackendNode] {
        var result = staticNodes
        var seen = Set(staticNodes.map(\.id))
        for entry in registry.sorted(by: { $0.id < $1.id }).prefix(RegistryNode.maximumEntries)
        where !entry.draining && seen.insert(entry.node.id).inserted {
            var node = entry.node
            node.weight = entry.effectiveWeight(now: now, usesLoad: usesLoad)
            result.append(node)
        }
        return result
    }
}
