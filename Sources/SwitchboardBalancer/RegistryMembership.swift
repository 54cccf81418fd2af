import SwitchboardCore

/// One node as the broker's registry describes it (`sb:node:<id>`, written by every `serve --broker
/// redis://…` node every 2 s with a 6 s TTL).
public struct RegistryNode: Sendable, Hashable {
    public var id: String
    /// Where the node listens, as a `BackendNode` (weight 1).
    public var node: BackendNode
    /// The node is draining: it leaves the pick set at once.
    public var draining: Bool
    public var connections: Int

    /// Most registry entries the balancer takes from one read.
    public static let maximumEntries = 1000

    /// Parses one registry value (`{"id", "address": "host:port", "draining", "connections", …}`); nil
    /// when it is not JSON, has no usable address, or names a wildcard address (`0.0.0.0`, `::`), which
    /// a node bound to all interfaces advertises and nobody can connect to.
    public static func parse(_ bytes: some Collection<UInt8>) -> RegistryNode? {
        guard bytes.count <= 64 * 1024, let json = try? JSONParser(maximumDepth: 8, maximumValues: 1000).parse(bytes),
            let id = json["id"]?.stringValue, let address = json["address"]?.stringValue,
            let node = try? BackendNode.parse(address), node.host != "0.0.0.0", node.host != "::"
        else { return nil }
        return RegistryNode(
            id: id, node: node, draining: json["draining"]?.boolValue ?? false,
            connections: max(0, json["connections"]?.intValue ?? 0))
    }
}

/// The pick set from the static `--node` list and the registry: static nodes first (in their order),
/// then registry nodes by id; a registry node at the address of a static one does not double it;
/// draining registry nodes are left out.
public enum RegistryMembership {
    public static func members(staticNodes: [BackendNode], registry: [RegistryNode]) -> [BackendNode] {
        var result = staticNodes
        var seen = Set(staticNodes.map(\.id))
        for entry in registry.sorted(by: { $0.id < $1.id }).prefix(RegistryNode.maximumEntries)
        where !entry.draining && seen.insert(entry.node.id).inserted {
            result.append(entry.node)
        }
        return result
    }
}
