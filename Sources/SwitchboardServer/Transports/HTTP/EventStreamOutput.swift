import NIOCore
import NIOHTTP1
import SwitchboardCore

/// A session's messages as SSE events in a chunked HTTP response on its own
/// socket, after the HTTP handler in the pipeline (docs/transports.md).
///
/// Owns what only SSE has: the secret half of the session id that POSTed
/// commands must name, and the resume id each event carries, so a
/// reconnecting EventSource resumes exactly where it was on any node.
final class EventStreamOutput: SessionOutput {
    /// The secret half of the session id (`<client>.<secret>`): 128 random bits in hex.
    let secret: String
    private var context: ChannelHandlerContext?
    /// Where each event's resume id is built as JSON before its base64url goes into the event:
    /// one buffer for the stream's life (at most `ResumeID.maximumJSONBytes` and one entry).
    private var idScratch: ByteBuffer?

    init() {
        self.secret = RandomID.hex(bytes: 16)
    }

    var transport: TransportName { .sse }
    var answersPings: Bool { false }
    var takesCombinedMessages: Bool { false }
    var closeCarriesCode: Bool { false }
    var allocator: ByteBufferAllocator { self.context?.channel.allocator ?? ByteBufferAllocator() }

    func attach(_ context: ChannelHandlerContext) {
        self.context = context
    }

    func detach() {
        self.context = nil
    }

    /// Whether `secret` names this session (compared in constant time).
    func matches(secret: String) -> Bool {
        ConstantTime.equals(self.secret, secret)
    }

    /// One event: the message's JSON and the session's resume id now. An id whose JSON would pass
    /// `ResumeID.maximumJSONBytes` (many channels, long names) is sent empty: it could not come back
    /// as `Last-Event-ID` (a header field holds 8 KB), and an empty one tells EventSource to send
    /// none rather than an older one that would deliver again what it has (the browser client
    /// sends its positions in `subs` anyway).
    func write(_ message: OutboundMessage, from session: ClientSession) {
        guard let context = self.context else { return }
        var payload = message.payload
        var event = context.channel.allocator.buffer(capacity: payload.readableBytes + 512)
        event.writeStaticString("data: ")
        event.writeBuffer(&payload)
        event.writeStaticString("\nid: ")
        if self.idScratch == nil { self.idScratch = context.channel.allocator.buffer(capacity: 512) }
        _ = ResumeID.write(session.positions, into: &event, scratch: &self.idScratch!)
        event.writeStaticString("\n\n")
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(event))), promise: nil)
    }

    func flush(from session: ClientSession) {
        self.context?.flush()
    }

    /// Ends the response, then the connection (SSE has no close codes: the `disconnect` event said why).
    /// A peer that stopped reading (the slow consumer this often ends) never lets the end go out: the
    /// connection is closed after the head timeout whatever is still unsent.
    func end(_ code: DisconnectCode, from session: ClientSession) {
        guard let context = self.context else { return }
        let channel = context.channel
        let cutoff = context.eventLoop.scheduleTask(in: .milliseconds(Int64(session.node.configuration.headTimeout * 1000))) {
            channel.close(promise: nil)
        }
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in
            cutoff.cancel()
            channel.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension EventStreamOutput: Sendable {}
