import NIOCore
import SwitchboardCore

/// Where a session's messages go: one implementation per transport
/// (`WebSocketOutput`, `EventStreamOutput`, `CollectOutput`).
///
/// The session decides what to say (replies in order, publications, pushes,
/// pings); its output decides how that reaches the client. Every method is
/// called on the session's event loop.
protocol SessionOutput: AnyObject {
    /// The transport's name, as metrics and clients call it.
    var transport: TransportName { get }

    /// Whether the client answers pings with pongs (only WebSocket clients can).
    var answersPings: Bool { get }

    /// Whether the client can take several publications in one message, separated by newlines
    /// (WebSocket, PROTOCOL.md "Framing"); the others get one message per publication.
    var takesCombinedMessages: Bool { get }

    /// Whether a close can carry a code, so a `disconnect` push before it is optional.
    var closeCarriesCode: Bool { get }

    /// The allocator for messages built for this output.
    var allocator: ByteBufferAllocator { get }

    /// The channel handler context writes go through, once the session is in a pipeline.
    func attach(_ context: ChannelHandlerContext)

    /// Lets go of the context (the session left its pipeline).
    func detach()

    /// Queues one message for the client; `session` is the writer (its state may go into the message's envelope).
    func write(_ message: OutboundMessage, from session: ClientSession)

    /// Sends what was queued.
    func flush(from session: ClientSession)

    /// Ends the connection after the session closed with `code`: a close frame, the end of the
    /// stream, or the HTTP answer.
    func end(_ code: DisconnectCode, from session: ClientSession)
}

/// A transport's name, as the metrics label `transport` and the browser client call it.
enum TransportName: String, CaseIterable, Sendable {
    case websocket
    case sse
    case longpoll
    /// A stateless `/rpc` call, counted while it runs.
    case rpc

    var index: Int {
        switch self {
        case .websocket: 0
        case .sse: 1
        case .longpoll: 2
        case .rpc: 3
        }
    }

    /// The session lives for one HTTP answer (a long-poll or an `/rpc` call).
    var isCollected: Bool { self == .longpoll || self == .rpc }
}

/// What became of commands POSTed to an SSE session.
enum SessionCommandOutcome: Sendable, Equatable {
    /// Queued; their replies come on the stream.
    case accepted(Int)
    /// Refused before any of them ran; `status` is the HTTP status to answer with.
    case rejected(status: Int, message: String)
}

/// Why an HTTP body of commands was refused (answered with 400).
struct HTTPCommandError: Error, Sendable {
    var message: String
    /// The body held more commands than a request may (413 rather than 400).
    var tooMany = false
}
