/// Where a client's connection stands.
public enum ConnectionState: Sendable, Hashable {
    /// Not connected: before `connect()`, or between attempts (`code`: why the last one ended; nil
    /// when the network failed without a close code).
    case disconnected(code: UInt16?, reason: String)
    case connecting
    case connected(ConnectResult)
    /// Ended for good: by `close()` (code nil), or by a node's code that forbids reconnecting.
    case closed(code: UInt16?, reason: String)
}
