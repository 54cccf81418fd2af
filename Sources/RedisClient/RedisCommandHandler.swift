import NIOCore
import RESP

/// A batch of encoded commands and what waits for their replies, in order.
struct RedisCommandBatch {
    var bytes: ByteBuffer
    var replies: [RedisPendingReply]
}

/// Matches replies to commands on one pipelined connection (replies come in command order).
///
/// Every command ends exactly once in `onCompletion`, on the channel's event loop: with its reply, an
/// error reply (`.server`), or a failure when the connection goes or a reply is overdue.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPToken
    typealias OutboundIn = RedisCommandBatch
    typealias OutboundOut = ByteBuffer

    private var pending = CircularBuffer<(reply: RedisPendingReply, sentAt: NIODeadline)>(initialCapacity: 16)
    private let commandTimeout: TimeAmount
    private let onCompletion: (RedisPendingReply, Result<RESPToken, RedisError>) -> Void
    private var timeoutTask: RepeatedTask?

    init(commandTimeout: TimeAmount, onCompletion: @escaping (RedisPendingReply, Result<RESPToken, RedisError>) -> Void) {
        self.commandTimeout = commandTimeout
        self.onCompletion = onCompletion
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let interval = TimeAmount.milliseconds(max(50, self.commandTimeout.nanoseconds / 4_000_000))
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.timeoutTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = loopBound.value
            handler.checkTimeout(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timeoutTask?.cancel()
        self.failAll(RedisError(.connectionClosed, "connection handler removed"))
    }

    /// The write promise succeeds once the batch is accepted here: from then on this handler
    /// completes its replies (with replies, or failures when the connection goes).
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let batch = Self.unwrapOutboundIn(data)
        let now = NIODeadline.now()
        for reply in batch.replies { self.pending.append((reply, now)) }
        context.write(Self.wrapOutboundOut(batch.bytes), promise: nil)
        promise?.succeed()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let token = Self.unwrapInboundIn(data)
        switch token.value {
        case .push, .attribute:
            // RESP3 pushes (client tracking etc.) are not replies; an attribute is metadata before
            // the reply it belongs to. Either taken as a reply would shift every later reply onto
            // the wrong command.
            return
        default:
            break
        }
        guard let head = self.pending.popFirst() else {
            context.fireErrorCaught(RedisError(.protocolError, "reply without a command"))
            context.close(promise: nil)
            return
        }
        if let message = token.errorMessage {
            self.onCompletion(head.reply, .failure(RedisError(.server, message)))
        } else {
            self.onCompletion(head.reply, .success(token))
        }
    }

    private func checkTimeout(context: ChannelHandlerContext) {
        guard let oldest = self.pending.first else { return }
        if NIODeadline.now() - oldest.sentAt > self.commandTimeout {
            // Order is lost once one reply is given up on: drop the connection.
            self.failAll(RedisError(.timeout, "no reply within \(self.commandTimeout)"))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failAll(RedisError(.protocolError, "\(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(RedisError(.connectionClosed, "connection closed"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: RedisError) {
        while let head = self.pending.popFirst() { self.onCompletion(head.reply, .failure(error)) }
    }
}

@available(*, unavailable)
extension RedisCommandHandler: Sendable {}
