import NIOCore
import SwitchboardCore

/// Identifies one subscription of one session (unique within a node).
typealias SubscriptionID = UInt64

/// Work the hub sends to one event loop, applied there in order.
///
/// Keeping everything a loop must do for its sessions in one ordered list is
/// what makes the subscribe seam exact: an activation lands between the live
/// frames that came before it and those that come after.
enum FanoutOp: Sendable {
    /// A finished frame for every local subscriber of `channel`; `offset` 0 for frames without one;
    /// `time` when the publication was accepted (ns since 1970, 0 for pushes that are not publications).
    case frame(channel: String, offset: UInt64, time: UInt64, ByteBuffer)
    /// A push that is not a publication (join, leave) for every local subscriber of `channel`.
    case push(channel: String, ByteBuffer)
    /// A subscription is ready: reply and go live.
    case activate(SubscriptionActivation)
    /// A subscription could not be made.
    case reject(SubscriptionID, SwitchboardError)
    /// Every local subscriber of `channel` loses its subscription (an `unsubscribe` push with `code`).
    case unsubscribeChannel(channel: String, code: Int, reason: String)
    /// Disconnect one client.
    case disconnect(client: String, DisconnectCode)
    /// Unsubscribe one client from a channel (an `unsubscribe` push with `code`).
    case unsubscribeClient(client: String, channel: String, code: Int, reason: String)
}

/// The outcome of a subscribe, computed by the hub.
struct SubscriptionActivation: Sendable {
    var id: SubscriptionID
    var channel: String
    /// Nil for channels without history.
    var position: StreamPosition?
    var recovered: Bool?
    var publications: [Publication]
    /// Frames of live publications that arrived while the subscription was being made; sent right after the reply.
    var following: [(offset: UInt64, frame: ByteBuffer)]
}
