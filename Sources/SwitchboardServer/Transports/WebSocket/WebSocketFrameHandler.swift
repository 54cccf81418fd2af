import NIOCore
import NIOWebSocket
import SwitchboardCore

/// RFC 6455 message layer: validates frames (masking, reserved bits and
/// opcodes, fragmentation, UTF-8, close codes), joins fragments into messages
/// under a size limit, answers pings and runs the closing handshake.
///
/// Reads the frames itself (`WebSocketFrameParser`) from the socket's bytes;
/// the handlers after it see only `WebSocketMessage`s and write finished
/// frame bytes (`ByteBuffer`).
final class WebSocketFrameHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = WebSocketMessage
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let maximumMessageSize: Int
    private let closeTimeout: TimeAmount
    private var partial: ByteBuffer?
    private var partialIsText = false
    private var closeSent = false
    private var closeTimer: Scheduled<Void>?
    /// Bytes of a frame that has not all arrived (nil when none: an idle connection keeps no buffer).
    private var unparsed: ByteBuffer?
    /// A header could not be read: the byte stream has no frame boundaries any more.
    private var desynchronized = false
    /// Pongs to the pings of the bytes being read, written in one write when they are all parsed or
    /// before the next message goes on (so each pong precedes what answers a later frame), flushed
    /// once per read (a flush per ping was a system call each: a ping flood held a loop).
    private var pongs: ByteBuffer?
    /// Pongs were written since the last flush.
    private var pongsUnflushed = false
    /// Pings a client may send (a keep-alive needs one every few seconds at most): past the rate a
    /// ping is not answered, and many refusals close the connection with 1008.
    private var pingLimiter: CommandRateLimiter?
    private let pingsPerSecond: Double
    private let pingBurst: Double

    init(maximumMessageSize: Int, closeTimeout: TimeAmount = .seconds(3), pingsPerSecond: Double = 10, pingBurst: Double = 50) {
        self.maximumMessageSize = maximumMessageSize
        self.closeTimeout = closeTimeout
        self.pingsPerSecond = pingsPerSecond
        self.pingBurst = pingBurst
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.desynchronized else { return }
        var incoming = Self.unwrapInboundIn(data)
        if self.unparsed == nil {
            self.unparsed = incoming
        } else {
            self.unparsed!.writeBuffer(&incoming)
        }
        while self.unparsed != nil {
            let frame: WebSocketFrameParser.Frame?
            do throws(WebSocketFrameParser.Failure) {
                frame = try WebSocketFrameParser.next(&self.unparsed!, maximumLength: self.maximumMessageSize)
            } catch {
                self.unparsed = nil
                self.desynchronized = true
                switch error {
                case .tooLarge: return self.fail(context: context, code: 1009, reason: "message too big")
                case .protocolError(let reason): return self.fail(context: context, code: 1002, reason: reason)
                }
            }
            guard let frame else { break }
            self.handleFrame(context: context, frame)
        }
        self.writePongs(context: context, flush: true)
        if let unparsed = self.unparsed {
            if unparsed.readableBytes == 0 {
                self.unparsed = nil
            } else if unparsed.readerIndex > 65_536 {
                self.unparsed!.discardReadBytes()
            }
        }
    }

    private func handleFrame(context: ChannelHandlerContext, _ frame: WebSocketFrameParser.Frame) {
        guard !self.closeSent || frame.opcode == .connectionClose else { return }
        guard frame.maskKey != nil else { return self.fail(context: context, code: 1002, reason: "unmasked client frame") }
        guard frame.reservedBits == 0 else {
            return self.fail(context: context, code: 1002, reason: "reserved bits set")
        }
        switch frame.opcode {
        case .text, .binary:
            guard self.partial == nil else {
                return self.fail(context: context, code: 1002, reason: "new message inside a fragmented message")
            }
            guard frame.payload.readableBytes <= self.maximumMessageSize else {
                return self.fail(context: context, code: 1009, reason: "message too big")
            }
            let payload = frame.unmaskedPayload(allocator: context.channel.allocator)
            if frame.fin {
                self.deliver(context: context, isText: frame.opcode == .text, payload)
            } else {
                self.partial = payload
                self.partialIsText = frame.opcode == .text
            }
        case .continuation:
            guard var partial = self.partial else {
                return self.fail(context: context, code: 1002, reason: "continuation without a message")
            }
            guard partial.readableBytes + frame.payload.readableBytes <= self.maximumMessageSize else {
                self.partial = nil
                return self.fail(context: context, code: 1009, reason: "message too big")
            }
            self.partial = nil  // keep the buffer uniquely referenced while appending
            var payload = frame.unmaskedPayload(allocator: context.channel.allocator)
            partial.writeBuffer(&payload)
            if frame.fin {
                self.deliver(context: context, isText: self.partialIsText, partial)
            } else {
                self.partial = partial
            }
        case .ping:
            let now = NIODeadline.now().uptimeNanoseconds
            if self.pingLimiter == nil {
                self.pingLimiter = CommandRateLimiter(rate: self.pingsPerSecond, burst: self.pingBurst, now: now)
            }
            switch self.pingLimiter!.admit(now: now) {
            case .allow:
                var payload = frame.unmaskedPayload(allocator: context.channel.allocator)
                if self.pongs == nil { self.pongs = context.channel.allocator.buffer(capacity: 2 + payload.readableBytes) }
                // A control frame's payload is at most 125 bytes (the parser refuses more): a 2-byte header.
                self.pongs!.writeInteger(UInt8(0x8A))  // FIN, opcode pong
                self.pongs!.writeInteger(UInt8(truncatingIfNeeded: payload.readableBytes))
                self.pongs!.writeBuffer(&payload)
            case .refuse:
                break
            case .close:
                self.fail(context: context, code: 1008, reason: "too many pings")
            }
        case .pong:
            break
        case .connectionClose:
            self.receivedClose(context: context, payload: frame.unmaskedPayload(allocator: context.channel.allocator))
        default:
            self.fail(context: context, code: 1002, reason: "unknown opcode")
        }
    }

    private func deliver(context: ChannelHandlerContext, isText: Bool, _ payload: ByteBuffer) {
        self.writePongs(context: context, flush: false)
        if isText {
            let valid = payload.withUnsafeReadableBytes { UTF8Validation.isValid($0) }
            guard valid else { return self.fail(context: context, code: 1007, reason: "invalid UTF-8") }
        }
        context.fireChannelRead(Self.wrapInboundOut(WebSocketMessage(isText: isText, data: payload)))
    }

    /// Writes the pongs owed for the frames parsed so far (in one write), and flushes when asked.
    private func writePongs(context: ChannelHandlerContext, flush: Bool) {
        if let pongs = self.pongs {
            self.pongs = nil
            if !self.closeSent {
                context.write(Self.wrapOutboundOut(pongs), promise: nil)
                self.pongsUnflushed = true
            }
        }
        if flush, self.pongsUnflushed {
            self.pongsUnflushed = false
            context.flush()
        }
    }

    private func receivedClose(context: ChannelHandlerContext, payload: ByteBuffer) {
        self.writePongs(context: context, flush: false)  // the close frame's flush sends them
        if self.closeSent {
            // The peer answered our close: the handshake is done.
            context.close(promise: nil)
            return
        }
        var payload = payload
        var replyCode: UInt16 = 1000
        switch payload.readableBytes {
        case 0:
            break
        case 1:
            return self.fail(context: context, code: 1002, reason: "close payload of one byte")
        default:
            let code = payload.readInteger(as: UInt16.self)!
            guard Self.isValidCloseCode(code) else { return self.fail(context: context, code: 1002, reason: "invalid close code") }
            let reasonValid = payload.withUnsafeReadableBytes { UTF8Validation.isValid($0) }
            guard reasonValid else { return self.fail(context: context, code: 1007, reason: "invalid UTF-8 in close reason") }
            replyCode = code
        }
        self.closeSent = true
        let frame = WebSocketFrameBuilder.closeFrame(code: replyCode, reason: "", allocator: context.channel.allocator)
        context.writeAndFlush(Self.wrapOutboundOut(frame)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
        // Our close waits behind whatever the peer left unread: a peer that stops reading must not
        // hold the socket, so it is closed after the close timeout if the reply is still unsent.
        let channel = context.channel
        self.closeTimer = context.eventLoop.scheduleTask(in: self.closeTimeout) {
            channel.close(promise: nil)
        }
    }

    /// Close codes a peer may send (RFC 6455 section 7.4).
    static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: return true
        default: return false
        }
    }

    private func fail(context: ChannelHandlerContext, code: UInt16, reason: String) {
        self.startClose(context: context, code: code, reason: reason)
    }

    /// Sends a close frame, then waits for the peer's close (or a timeout) before closing the socket.
    private func startClose(context: ChannelHandlerContext, code: UInt16, reason: String) {
        guard !self.closeSent else { return }
        self.writePongs(context: context, flush: false)  // the close frame's flush sends them
        self.closeSent = true
        self.partial = nil
        let frame = WebSocketFrameBuilder.closeFrame(code: code, reason: reason, allocator: context.channel.allocator)
        context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
        let channel = context.channel
        self.closeTimer = context.eventLoop.scheduleTask(in: self.closeTimeout) {
            channel.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(WebSocketClosing(code: code))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !self.closeSent else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        context.write(data, promise: promise)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if let request = event as? WebSocketCloseRequest {
            self.startClose(context: context, code: request.code, reason: request.reason)
            promise?.succeed()
        } else {
            context.triggerUserOutboundEvent(event, promise: promise)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            switch error {
            case .invalidFrameLength: self.fail(context: context, code: 1009, reason: "message too big")
            default: self.fail(context: context, code: 1002, reason: "protocol error")
            }
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closeTimer?.cancel()
        self.closeTimer = nil
        self.partial = nil
        self.unparsed = nil
        context.fireChannelInactive()
    }
}

/// Told to the handlers after the frame handler when the server starts closing (they stop writing).
struct WebSocketClosing {
    var code: UInt16
}

@available(*, unavailable)
extension WebSocketFrameHandler: Sendable {}
