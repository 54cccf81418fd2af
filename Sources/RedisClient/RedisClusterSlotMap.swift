public import RESP

/// Which Redis Cluster master serves each of the 16,384 slots, as `CLUSTER SLOTS` reports it and
/// as `MOVED` replies correct it.
///
/// A value: the cluster client keeps one per event loop and replaces it after each refresh. A slot
/// nobody claims (a cluster being created, or a master lost without a replica) has no node.
public struct RedisClusterSlotMap: Sendable, Equatable {
    /// Per slot, 1 + the index of its master in `nodes`; 0 when unassigned.
    private var owners: [UInt16]
    /// The masters named by the map, without duplicates.
    public private(set) var nodes: [RedisNodeAddress]

    /// A map with no slot assigned.
    public init() {
        self.owners = Array(repeating: 0, count: RedisHashSlot.count)
        self.nodes = []
    }

    /// Reads a `CLUSTER SLOTS` reply: entries `[first, last, [host, port, id, ...], replicas...]`.
    ///
    /// - Parameter answeredBy: the node that answered, whose host stands in for an empty or
    ///   unknown (`?`) endpoint.
    /// - Throws: `RedisError.protocolError` when the reply is not of that shape or a slot or port
    ///   is out of range.
    public init(slotsReply: RESPToken, answeredBy: RedisNodeAddress) throws(RedisError) {
        self.init()
        guard let entries = slotsReply.array else { throw RedisError(.protocolError, "CLUSTER SLOTS: not an array") }
        for entry in entries {
            guard let fields = entry.array, fields.count >= 3,
                let first = fields[0].int64, let last = fields[1].int64,
                first >= 0, first <= last, last < RedisHashSlot.count,
                let master = fields[2].array, master.count >= 2,
                let port = master[1].int64, (1...65_535).contains(port)
            else { throw RedisError(.protocolError, "CLUSTER SLOTS: unexpected entry") }
            var host = master[0].string ?? ""
            if host.isEmpty || host == "?" { host = answeredBy.host }
            let node = RedisNodeAddress(host: host, port: Int(port))
            let owner = self.index(of: node)
            for slot in Int(first)...Int(last) { self.owners[slot] = owner }
        }
    }

    /// The master of `slot` (0...16383), nil when unassigned.
    public func node(forSlot slot: UInt16) -> RedisNodeAddress? {
        guard Int(slot) < self.owners.count else { return nil }
        let owner = self.owners[Int(slot)]
        return owner == 0 ? nil : self.nodes[Int(owner) - 1]
    }

    /// Records what a `MOVED` reply says: `slot` is served by `node` from now on.
    public mutating func assign(_ slot: UInt16, to node: RedisNodeAddress) {
        guard Int(slot) < self.owners.count else { return }
        self.owners[Int(slot)] = self.index(of: node)
    }

    /// Whether every slot has a master.
    public var coversAllSlots: Bool { !self.owners.contains(0) }

    /// 1 + the index of `node` in `nodes`, added when new (at most one entry per slot can exist:
    /// the table stays bounded by the slots, whatever the replies say).
    private mutating func index(of node: RedisNodeAddress) -> UInt16 {
        if let index = self.nodes.firstIndex(of: node) { return UInt16(index + 1) }
        if self.nodes.count >= RedisHashSlot.count { self.compact() }
        self.nodes.append(node)
        return UInt16(self.nodes.count)
    }

    /// Drops nodes that serve no slot any more (renumbering the owners).
    private mutating func compact() {
        var used = Array(repeating: false, count: self.nodes.count)
        for owner in self.owners where owner != 0 { used[Int(owner) - 1] = true }
        var renumbered = Array(repeating: UInt16(0), count: self.nodes.count)
        var kept: [RedisNodeAddress] = []
        for (index, node) in self.nodes.enumerated() where used[index] {
            kept.append(node)
            renumbered[index] = UInt16(kept.count)
        }
        for slot in self.owners.indices where self.owners[slot] != 0 {
            self.owners[slot] = renumbered[Int(self.owners[slot]) - 1]
        }
        self.nodes = kept
    }
}
