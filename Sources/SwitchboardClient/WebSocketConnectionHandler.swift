import Logging
import NIOCore
import NIOWebSocket

/// The client's end of one WebSocket connection, after the handshake: hands each text message to
/// the driver, answers pings, echoes the node's close frame, and tells the driver the close code
/// once the connection is gone. Sends nothing of its own but pongs and the close.
final class WebSocketConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let driver: ClientDriver
    private let generation: UInt64
    /// The node's close code and reason, when it sent a close frame.
    private var closeCode: (code: UInt16?, reason: String)?

    init(driver: ClientDriver, generation: UInt64) {
        self.driver = driver
        self.generation = generation
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.driver.connectionOpened(context.channel, generation: self.generation)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            self.driver.received(frame.unmaskedData, generation: self.generation)
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(Self.wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            var payload = frame.unmaskedData
            let code = payload.readInteger(as: UInt16.self)
            let reason = payload.readString(length: payload.readableBytes) ?? ""
            self.closeCode = (code, reason)
            var echo = context.channel.allocator.buffer(capacity: 2)
            if let code { echo.writeInteger(code) }
            let close = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: echo)
            context.writeAndFlush(Self.wrapOutboundOut(close)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        default:
            break  // binary frames and pongs carry nothing for this protocol
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.driver.connectionClosed(code: self.closeCode?.code, reason: self.closeCode?.reason ?? "", generation: self.generation)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.driver.logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension WebSocketConnectionHandler: Sendable {}
