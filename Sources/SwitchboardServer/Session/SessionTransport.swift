import NIOCore

/// How a session's JSON objects reach its client. The session logic (commands,
/// subscriptions, recovery, replies in order) is the same for all of them.
enum SessionTransport {
    /// Finished WebSocket frames on the session's own socket.
    case webSocket
    /// SSE events in a chunked HTTP response on the session's own socket;
    /// commands arrive by POST, possibly forwarded from another node.
    case eventStream
    /// Objects gathered for one HTTP answer (a long-poll or an `/rpc` call);
    /// the session ends when the answer is sent.
    case collect(ResponseCollector)

    var isWebSocket: Bool {
        if case .webSocket = self { return true }
        return false
    }

    /// The name metrics and clients use.
    var name: TransportName {
        switch self {
        case .webSocket: .websocket
        case .eventStream: .sse
        case .collect(let collector): collector.purpose == .poll ? .longpoll : .rpc
        }
    }

    var isEventStream: Bool {
        if case .eventStream = self { return true }
        return false
    }
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
}
