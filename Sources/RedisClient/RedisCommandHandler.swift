import NIOCore
import RESP

/// A batch of encoded commands and the promises for their replies, in order.
struct RedisCommandBatch {
    var bytes: ByteBuffer
    var promises: [EventLoopPromise<RESPToken>]
}

/// Matches replies to commands on one pipelined connection (replies come in command order).
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPToken
    typealias OutboundIn = RedisCommandBatch
    typealias OutboundOut = ByteBuffer

    private var pending = CircularBuffer<(promise: EventLoopPromise<RESPToken>, sentAt: NIODeadline)>(initialCapacity: 16)
    private let commandTimeout: TimeAmount
    private var timeoutTask: RepeatedTask?

    init(commandTimeout: TimeAmount) {
        self.commandTimeout = commandTimeout
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
    /// completes its reply promises (with replies, or failures when the connection goes).
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let batch = Self.unwrapOutboundIn(data)
        let now = NIODeadline.now()
        for p in batch.promises { self.pending.append((p, now)) }
        context.write(Self.wrapOutboundOut(batch.bytes), promise: nil)
        promise?.succeed()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let token = Self.unwrapInboundIn(data)
        if case .push = token.value { return }  // RESP3 pushes (client tracking etc.) are not replies
        guard let head = self.pending.popFirst() else {
            context.fireErrorCaught(RedisError(.protocolError, "reply without a command"))
            context.close(promise: nil)
            return
        }
        if let message = token.errorMessage {
            head.promise.fail(RedisError(.server, message))
        } else {
            head.promise.succeed(token)
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
        while let head = self.pending.popFirst() { head.promise.fail(error) }
    }
}

@available(*, unavailable)
extension RedisCommandHandler: Sendable {}
