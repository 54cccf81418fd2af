import NIOCore
import SwitchboardCore

/// A session's messages as WebSocket text frames on its own socket, after
/// `WebSocketFrameHandler` in the pipeline.
///
/// A message's header was written once into the room in front of its payload
/// (`OutboundMessage`), so every subscriber of a publication is written the
/// same bytes: the frame here is only a wider view of the same buffer.
final class WebSocketOutput: SessionOutput {
    private var context: ChannelHandlerContext?

    init() {}

    var transport: TransportName { .websocket }
    var answersPings: Bool { true }
    var takesCombinedMessages: Bool { true }
    var closeCarriesCode: Bool { true }
    /// The default allocator, which is every node channel's (the node sets no other): asking the
    /// channel for it costs a call into NIO per reply.
    var allocator: ByteBufferAllocator { ByteBufferAllocator() }

    func attach(_ context: ChannelHandlerContext) {
        self.context = context
    }

    func detach() {
        self.context = nil
    }

    @inline(__always)
    func write(_ message: OutboundMessage, from session: ClientSession) {
        self.context?.write(NIOAny(message.webSocketFrame), promise: nil)
    }

    func flush(from session: ClientSession) {
        self.context?.flush()
    }

    /// Sends what is queued, then asks the frame handler for a close frame with `code`.
    func end(_ code: DisconnectCode, from session: ClientSession) {
        guard let context = self.context else { return }
        context.flush()
        context.triggerUserOutboundEvent(WebSocketCloseRequest(code: code.rawValue, reason: code.reason), promise: nil)
    }
}

@available(*, unavailable)
extension WebSocketOutput: Sendable {}

extension OutboundMessage {
    /// The message as one unmasked text frame: its header and payload.
    @inline(__always)
    var webSocketFrame: ByteBuffer {
        var frame = self.payload
        frame.moveReaderIndex(to: frame.readerIndex - WebSocketFrameBuilder.headerLength(payloadLength: frame.readableBytes))
        return frame
    }
}
