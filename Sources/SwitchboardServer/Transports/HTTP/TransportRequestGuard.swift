import NIOCore
import NIOHTTP1
import SwitchboardCore

/// The checks every client-transport request (`/sse`, `/poll`, `/rpc`) passes before its body is
/// read as JSON: a draining node starts no new session, the body fits in one message (like one
/// WebSocket message) and it is UTF-8. Kept in one place so that no endpoint forgets one.
///
/// Pure (no channel): `HTTPHandler` answers the refusal it returns.
struct TransportRequestGuard {
    /// Largest body a transport request may carry (`maxMessageSize`).
    var maximumBodySize: Int
    /// Whether the node is draining: new sessions belong on another node.
    var isDraining: Bool

    /// What a request asks of the node.
    enum Purpose {
        /// Starts a session here (an SSE stream, a poll): refused while the node drains.
        case startsSession
        /// Serves an existing session, or nothing that outlives the request (commands for an SSE
        /// stream, `/rpc`): still served while the node drains.
        case servesRequest
    }

    /// A request the node does not serve: the answer, and whether the connection ends with it.
    struct Refusal {
        var response: HTTPResponse
        var closesConnection: Bool
    }

    /// The answer to give instead of serving the request, or nil when it may go on.
    func refusal(_ purpose: Purpose, body: ByteBuffer?) -> Refusal? {
        if self.isDraining, purpose == .startsSession {
            var response = HTTPResponse.error(.serviceUnavailable, "draining: connect to another node", code: .internalError)
            response.headers.append(("Retry-After", "1"))
            return Refusal(response: response, closesConnection: true)
        }
        guard let body else { return nil }
        guard body.readableBytes <= self.maximumBodySize else {
            return Refusal(
                response: .error(.payloadTooLarge, "body larger than \(self.maximumBodySize) bytes"), closesConnection: false)
        }
        guard body.withUnsafeReadableBytes({ UTF8Validation.isValid($0) }) else {
            return Refusal(response: .error(.badRequest, "body is not UTF-8"), closesConnection: false)
        }
        return nil
    }
}
