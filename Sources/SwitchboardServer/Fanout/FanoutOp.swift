import NIOCore
import SwitchboardBroker
import SwitchboardCore

extension FanoutOp {
    /// What an operation weighs in a `DeliveryBacklog` beyond its message bytes.
    static let baseWeight = 64

    /// About the bytes `ops` hold (messages and bookkeeping), for the broker's delivery backlog.
    static func weight(of ops: [FanoutOp]) -> Int {
        var total = 0
        for index in ops.indices {
            switch ops[index] {
            case .publication(_, _, _, let message), .push(_, let message): total &+= message.byteCount
            case .batch(let batch): total &+= batch.bytes
            default: break
            }
            total &+= Self.baseWeight
        }
        return total
    }
}

extension BrokerEvent {
    /// Bytes of the event's payload (a publication's data), for the delivery backlog.
    var payloadBytes: Int {
        if case .publication(_, let publication, _) = self { return publication.data.readableBytes }
        return 0
    }
}

/// Identifies one subscription of one session (unique within a node).
typealias SubscriptionID = UInt64

/// Work the hub sends to one event loop, applied there in order.
///
/// Keeping everything a loop must do for its sessions in one ordered list is
/// what makes the subscribe seam exact: an activation lands between the live
/// frames that came before it and those that come after.
enum FanoutOp: Sendable {
    /// A publication for every local subscriber of `channel`; `offset` 0 for channels without history;
    /// `time` when the publication was accepted (ns since 1970).
    case publication(channel: String, offset: UInt64, time: UInt64, OutboundMessage)
    /// Consecutive publications of one channel from the same tick, sent as one message (objects separated by `\n`).
    case batch(PublicationBatch)
    /// A push that is not a publication (join, leave) for every local subscriber of `channel`.
    case push(channel: String, OutboundMessage)
    /// A subscription is ready: reply and go live.
    case activate(SubscriptionActivation)
    /// A subscription could not be made.
    case reject(SubscriptionID, SwitchboardError)
    /// Every local subscriber of `channel` loses its subscription (an `unsubscribe` push with `code`).
    case unsubscribeChannel(channel: String, UnsubscribeCode)
    /// Disconnect one client.
    case disconnect(client: String, DisconnectCode)
    /// Unsubscribe one client from a channel (an `unsubscribe` push with `code`).
    case unsubscribeClient(client: String, channel: String, UnsubscribeCode)
    /// The broker's answer to a session's publish, handed to the session's callback (batched after
    /// the publications, so the reply and the echo of the publication go out in one flush).
    case publishResult(PublishCompletion)
}

/// What a session needs to answer its publish: the command's id, the reply slot it reserved and
/// when it asked (for the broker latency metric).
struct PublishTicket: Sendable {
    var id: UInt32
    var slot: UInt64
    var started: NIODeadline
}

/// The broker's answer to a session's publish, on its way back to the session's loop. The session
/// and its ticket travel as values, not in a closure: no allocation per publish.
struct PublishCompletion: Sendable {
    let session: NIOLoopBound<ClientSession>
    let ticket: PublishTicket
    var result: Result<PublishResult, any Error>

    /// Answers the session (on its loop).
    func run() {
        self.session.value.completePublish(self.ticket, self.result)
    }
}

/// The outcome of a subscribe, computed by the hub.
struct SubscriptionActivation: Sendable {
    var id: SubscriptionID
    var channel: String
    /// Nil for channels without history.
    var position: StreamPosition?
    var recovered: Bool?
    var publications: [Publication]
    /// Live publications that arrived while the subscription was being made; sent right after the reply.
    var following: [(offset: UInt64, message: OutboundMessage)]
    /// `publications` are only the first of those missed: the rest did not fit the request's
    /// `recoveryBytes` (or, in a poll, the room its earlier recoveries left). A poll pages on from
    /// the last of them; any other reply is not recovered.
    var truncated = false
}

/// Publications of one channel that arrived within one hub tick, in offset order.
///
/// Built on the hub's loop, then handed to one subscriber loop and only read
/// there: every subscriber that is exactly at the batch's start gets one message
/// holding all of them (PROTOCOL.md "Framing"), so K publications cost one
/// write per subscriber instead of K.
final class PublicationBatch: @unchecked Sendable {
    // @unchecked: filled on the hub's loop, then handed to one loop that only reads it: never shared while mutable.
    /// Most publications in one batch, and most payload bytes, so frames stay moderate.
    static let maximumParts = 64
    static let maximumBytes = 65_536

    let channel: String
    private(set) var parts: [(offset: UInt64, time: UInt64, message: OutboundMessage)]
    private(set) var bytes = 0

    init(channel: String, first: (offset: UInt64, time: UInt64, message: OutboundMessage)) {
        self.channel = channel
        self.parts = [first]
        self.bytes = first.message.byteCount
        self.parts.reserveCapacity(8)
    }

    /// Appends the next publication if it continues the batch; false when it cannot.
    func append(offset: UInt64, time: UInt64, message: OutboundMessage) -> Bool {
        guard self.parts.count < Self.maximumParts, self.bytes + message.byteCount <= Self.maximumBytes else { return false }
        let last = self.parts[self.parts.count - 1].offset
        guard (offset == 0 && last == 0) || (last > 0 && offset == last + 1) else { return false }
        self.parts.append((offset, time, message))
        self.bytes += message.byteCount
        return true
    }

    var firstOffset: UInt64 { self.parts[0].offset }
    var lastOffset: UInt64 { self.parts[self.parts.count - 1].offset }

    /// One message with every publication's JSON, separated by newlines.
    func combinedMessage(allocator: ByteBufferAllocator) -> OutboundMessage {
        OutboundMessage(allocator: allocator, capacity: self.bytes + self.parts.count) { buffer in
            for (i, part) in self.parts.enumerated() {
                if i > 0 { buffer.writeInteger(UInt8(ascii: "\n")) }
                var payload = part.message.payload
                buffer.writeBuffer(&payload)
            }
        }
    }
}
