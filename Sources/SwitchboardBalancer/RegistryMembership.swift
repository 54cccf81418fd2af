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

    public init(
        id: String, node: BackendNode, draining: Bool, connections: Int, maxConnections: Int = 0, announcedAt: Double? = nil
    ) {
        self.id = id
        self.node = node
        self.draining = draining
        self.connections = connections
        self.maxConnections = maxConnections
        self.announcedAt = announcedAt
    }

    /// Most registry entries the balancer takes from one read.
    public static let maximumEntries = 1000

    /// A load report older (or further in the future) than this is not used: the node announces every
    /// 2 s, so it missed two announces, or the clocks of the node's broker and this balancer disagree.
    public static let staleAfterSeconds = 5.0

    /// Parses one registry value (`{"id", "address": "host:port", "draining", "connections",
    /// "maxConnections", "weight", "at", …}`); nil when it is not JSON, has no usable address, or names a
    /// wildcard address (`0.0.0.0`, `::`), which a node bound to all interfaces advertises and nobody can
    /// connect to. A weight outside 1-100 is clamped into it; negative counts read as 0.
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
            announcedAt: at.flatMap { $0.isFinite ? $0 : nil })
    }

    /// The weight the balancer gives the node at `now` (seconds since 1970): its announced weight times
    /// the share of its connections still free, rounded, at least 1:
    ///
    ///     max(1, round(weight × (1 − min(1, connections ÷ maxConnections))))
    ///
    /// A weight-10 node half full counts as 5, nine tenths full as 1. The announced weight alone is used
    /// when the report is stale (see `staleAfterSeconds`), says no `maxConnections`, or `usesLoad` is
    /// false (hashing: a weight that moves with load would move keys between nodes every read).
    /// Load lowers a weight only as finely as the weight allows: a weight-1 node stays 1.
    public func effectiveWeight(now: Double, usesLoad: Bool) -> Int {
        let weight = self.node.weight
        guard usesLoad, self.maxConnections > 0, let at = self.announcedAt, abs(now - at) <= Self.staleAfterSeconds else {
            return weight
        }
        let used = min(1, Double(self.connections) / Double(self.maxConnections))
        return max(1, Int((Double(weight) * (1 - used)).rounded()))
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
