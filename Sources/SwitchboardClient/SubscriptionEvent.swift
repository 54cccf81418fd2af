public import SwitchboardCore

/// What happens to a subscription, in the order it happens.
public enum SubscriptionEvent: Sendable, Hashable {
    /// The node took the subscription (again, after a reconnect). `recovered`: whether every
    /// publication missed while disconnected came back (they are delivered just before this
    /// event's successors, as `.publication`s); nil on a first subscribe, which recovers nothing.
    case subscribed(position: StreamPosition?, recovered: Bool?)
    /// A publication, each once, in offset order.
    case publication(ClientPublication)
    /// Publications were missed for good (the history moved on, or its epoch changed): reload the
    /// state this channel feeds from your backend; delivery goes on from `position`.
    case unrecovered(position: StreamPosition?)
    /// A client joined or left (namespaces with `joinLeave`).
    case join(ClientInfo)
    case leave(ClientInfo)
    /// The subscription ended: by `unsubscribe`, by the node (`code`, 2000 when the backend removed
    /// it), by a refusal (`error`), or because the client was closed for good.
    case ended(code: Int, reason: String)
}
