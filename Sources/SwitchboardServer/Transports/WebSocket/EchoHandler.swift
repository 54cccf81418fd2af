import NIOCore
import NIOWebSocket

/// Echoes every WebSocket message back: the `/echo` endpoint for conformance
/// runs, behind the same frame handling and limits as client sessions.
///
/// A connection that sends no message for `idleTimeout` is closed (1001): the echo has no session,
/// so no ping and no sweep would ever end one that goes quiet, or one whose peer stopped reading
/// (reading stops while its echoes cannot be written).
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketMessage
    typealias OutboundOut = ByteBuffer

    private let idleTimeout: TimeAmount
    private var lastMessage = NIODeadline.now()
    private var idleCheck: Scheduled<Void>?

    init(idleTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.lastMessage = context.eventLoop.now
        self.scheduleIdleCheck(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.idleCheck?.cancel()
        self.idleCheck = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.lastMessage = context.eventLoop.now
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

    func channelInactive(context: ChannelHandlerContext) {
        self.idleCheck?.cancel()
        self.idleCheck = nil
        context.fireChannelInactive()
    }

    /// One check at the idle deadline: the connection goes if no message came since, else the next
    /// check is at the deadline the last message set (one timer per connection, not one per message).
    private func scheduleIdleCheck(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.idleCheck = context.eventLoop.scheduleTask(deadline: self.lastMessage + self.idleTimeout) {
            let (handler, context) = loopBound.value
            handler.idleCheck = nil
            guard context.channel.isActive else { return }
            if context.eventLoop.now >= handler.lastMessage + handler.idleTimeout {
                context.triggerUserOutboundEvent(WebSocketCloseRequest(code: 1001, reason: "idle"), promise: nil)
                context.flush()
            } else {
                handler.scheduleIdleCheck(context: context)
            }
        }
    }
}

@available(*, unavailable)
extension EchoHandler: Sendable {}
