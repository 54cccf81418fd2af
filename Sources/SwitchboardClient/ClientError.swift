public import SwitchboardCore

/// Why a request of `SwitchboardClient` failed.
public enum ClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The node answered with an error (its code and message, from the protocol's table).
    case server(SwitchboardError)
    /// No answer within the request timeout (the client may still be reconnecting).
    case timedOut
    /// The connection ended before the answer came: the command may or may not have been carried out
    /// (publish with an `idempotencyKey` to retry safely).
    case connectionLost
    /// The client was closed, by `close()` or by a node's code that forbids reconnecting.
    case closed(code: UInt16?, reason: String)
    /// The request was refused before it was sent: `data` that is not one JSON value, a message
    /// over `maximumMessageSize`, a channel not subscribed.
    case invalidRequest(String)

    public var description: String {
        switch self {
        case .server(let error): "server error \(error)"
        case .timedOut: "timed out"
        case .connectionLost: "connection lost before the answer"
        case .closed(let code, let reason): "closed (\(code.map(String.init) ?? "by the client")\(reason.isEmpty ? "" : ": \(reason)"))"
        case .invalidRequest(let why): "invalid request: \(why)"
        }
    }
}
