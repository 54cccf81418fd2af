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

    /// One event: the message's JSON and the session's resume id now.
    func write(_ message: OutboundMessage, from session: ClientSession) {
        guard let context = self.context else { return }
        var payload = message.payload
        let id = ResumeID.encode(session.positions)
        var event = context.channel.allocator.buffer(capacity: payload.readableBytes + id.utf8.count + 16)
        event.writeStaticString("data: ")
        event.writeBuffer(&payload)
        event.writeStaticString("\nid: ")
        event.writeString(id)
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
