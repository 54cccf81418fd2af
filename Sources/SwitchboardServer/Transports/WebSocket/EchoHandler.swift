import NIOCore
import NIOWebSocket

/// Echoes every WebSocket message back: the `/echo` endpoint for conformance
/// runs, behind the same frame handling and limits as client sessions.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketMessage
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = Self.unwrapInboundIn(data)
        let frame = WebSocketFrameBuilder.frame(
            opcode: message.isText ? .text : .binary,
            payload: message.data,
            allocator: context.channel.allocator
        )
        context.write(Self.wrapOutboundOut(frame), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}

@available(*, unavailable)
extension EchoHandler: Sendable {}
