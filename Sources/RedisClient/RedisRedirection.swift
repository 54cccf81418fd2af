/// A Redis Cluster node's answer that a key's slot is served elsewhere: `MOVED` (for good: the
/// slot map is out of date) or `ASK` (during a slot migration: this one command goes to the other
/// node, preceded by `ASKING`).
public struct RedisRedirection: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        case moved
        case ask
    }

    public var kind: Kind
    public var slot: UInt16
    /// Where to go; an empty host means the host of the node that answered (Redis's
    /// `cluster-preferred-endpoint-type unknown-endpoint`).
    public var address: RedisNodeAddress

    public init(kind: Kind, slot: UInt16, address: RedisNodeAddress) {
        self.kind = kind
        self.slot = slot
        self.address = address
    }

    /// Parses an error reply `MOVED <slot> <host>:<port>` or `ASK <slot> <host>:<port>`; nil for
    /// any other error and for any slot or port out of range.
    public init?(errorMessage message: String) {
        let parts = message.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 3 else { return nil }
        switch parts[0] {
        case "MOVED": self.kind = .moved
        case "ASK": self.kind = .ask
        default: return nil
        }
        guard let slot = UInt16(parts[1]), Int(slot) < RedisHashSlot.count,
            let address = RedisNodeAddress(parts[2])
        else { return nil }
        self.slot = slot
        self.address = address
    }
}
