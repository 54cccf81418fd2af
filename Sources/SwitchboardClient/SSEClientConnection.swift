import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A connection over server-sent events: the node's messages come on the stream (`SSEStreamHandler`),
/// commands go as `POST /sse?session=…` requests, one at a time so that they arrive in the order
/// they were sent, each batch at most `maximumBodySize` bytes (the node's `maxMessageSize`: a larger
/// body is refused with 413). A command POST that fails or is refused ends the connection (the
/// session is gone, or its node cannot be reached): the driver reconnects, and requests in flight
/// fail with `connectionLost`, as on a WebSocket that drops.
final class SSEClientConnection: ClientConnection {
    private enum PostState {
        case idle
        case posting(HTTPExchange)
        case closed
    }

    let endpoint: ClientEndpoint
    private let sslContext: NIOSSLContext?
    private let eventLoop: any EventLoop
    private let requestTimeout: TimeAmount
    /// The stream's channel, once connected.
    var stream: (any Channel)?
    private var session: String?
    /// Commands waiting for a POST, oldest first.
    private var waiting: CommandBatches
    private var state = PostState.idle
    /// Why the connection ended, when it was a command POST (reported with the stream's end).
    private(set) var failure: String?
    let allocator = ByteBufferAllocator()

    init(endpoint: ClientEndpoint, sslContext: NIOSSLContext?, eventLoop: any EventLoop, requestTimeout: TimeAmount, maximumBodySize: Int) {
        self.endpoint = endpoint
        self.sslContext = sslContext
        self.eventLoop = eventLoop
        self.requestTimeout = requestTimeout
        self.waiting = CommandBatches(maximumBodySize: maximumBodySize)
    }

    func send(_ command: ByteBuffer) {
        if case .closed = self.state { return }
        self.waiting.append(command)
    }

    func flush() {
        guard case .idle = self.state, let session = self.session, let body = self.waiting.nextBatch() else { return }
        self.post(body, session: session)
    }

    func close() {
        if case .posting(let exchange) = self.state { exchange.cancel() }
        self.state = .closed
        self.waiting.removeAll()
        self.stream?.close(promise: nil)
    }

    func connectReplied(session: String?) {
        self.session = session
        guard session != nil else {
            self.fail("the connect reply carried no session")
            return
        }
        self.flush()
    }

    /// The path of a command POST: the stream's path with the session in its query.
    var commandTarget: String {
        let session = self.session ?? ""
        let encoded = session.addingPercentEncodingForQuery()
        return self.endpoint.ssePath + (self.endpoint.ssePath.contains("?") ? "&" : "?") + "session=" + encoded
    }

    private func post(_ body: ByteBuffer, session: String) {
        let exchange = HTTPExchange { result in
            switch result {
            case .success(let answer):
                self.postAnswered(status: answer.status, body: String(buffer: answer.body).trimmingCharacters(in: .whitespacesAndNewlines))
            case .failure(let failure):
                self.postFailed("command POST failed: \(failure)")
            }
        }
        self.state = .posting(exchange)
        exchange.start(
            endpoint: self.endpoint, sslContext: self.sslContext, eventLoop: self.eventLoop, method: .POST,
            target: self.commandTarget, headers: [("Content-Type", "text/plain; charset=utf-8")], body: body,
            maximumBodySize: 4096, timeout: self.requestTimeout)
    }

    /// The node answered a command POST.
    func postAnswered(status: UInt, body: String) {
        guard case .posting = self.state else { return }
        guard status == 202 || status == 200 else {
            // 404: the session is gone (its node died or ended it); 503: its node did not answer.
            self.fail("command POST answered \(status)\(body.isEmpty ? "" : ": " + body)")
            return
        }
        self.state = .idle
        self.flush()
    }

    /// A command POST could not be made or got no answer.
    func postFailed(_ reason: String) {
        guard case .posting = self.state else { return }
        self.fail(reason)
    }

    private func fail(_ reason: String) {
        guard self.failure == nil else { return }
        self.failure = reason
        self.close()
    }
}

@available(*, unavailable)
extension SSEClientConnection: Sendable {}

extension String {
    /// Percent-encodes everything but unreserved characters (RFC 3986), for a query value.
    func addingPercentEncodingForQuery() -> String {
        var out = ""
        for byte in self.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte & 0xF)]))
            }
        }
        return out
    }
}
