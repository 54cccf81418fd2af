import NIOCore

/// One half of a tunnel: copies what its channel reads to the partner's channel, after swift-nio-examples'
/// connect-proxy `GlueHandler` (loop-confined, no locks: both channels share one event loop).
///
/// One flush per read cycle (on `channelReadComplete`). Backpressure: a `read()` is held back while the
/// partner's channel is not writable (above its high water mark) and issued again when it drains below
/// the low mark, so at most about one water mark plus one read is buffered per direction. A read EOF
/// becomes a write EOF on the partner (half-close); a channel is fully closed once it has both read and
/// written EOF, and a close or error on either side closes both.
///
/// One exception: a node that ends the tunnel (close, reset or EOF) before sending a byte does not
/// close the client. The client half passes `NodeEndedBeforeResponse` outbound to the `FrontHandler`
/// in front of it, which sends the request to another node; only if it cannot (the event's promise
/// fails) is the client closed.
final class TunnelHandler {
    enum Side {
        case client
        case node
    }

    /// Outbound user event from the client half: the node ended the tunnel without answering.
    struct NodeEndedBeforeResponse {
        var bytesToNode: UInt64
    }

    private let side: Side
    private let link: TunnelLink
    private var partner: TunnelHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputClosed = false
    private var outputClosed = false

    private init(side: Side, link: TunnelLink) {
        self.side = side
        self.link = link
    }

    /// The client half and the node half of one tunnel, joined.
    static func matchedPair(link: TunnelLink) -> (client: TunnelHandler, node: TunnelHandler) {
        let client = TunnelHandler(side: .client, link: link)
        let node = TunnelHandler(side: .node, link: link)
        client.partner = node
        node.partner = client
        return (client, node)
    }

    private func partnerWrite(_ data: NIOAny) {
        self.context?.write(data, promise: nil)
    }

    private func partnerFlush() {
        self.context?.flush()
    }

    private func partnerWriteEOF() {
        guard let context = self.context, !self.outputClosed else { return }
        self.outputClosed = true
        if self.inputClosed {
            context.close(promise: nil)
        } else {
            context.close(mode: .output, promise: nil)
        }
    }

    private func partnerCloseFull() {
        self.context?.close(promise: nil)
    }

    /// The node ended the tunnel before its first byte: ask the front handler to retry elsewhere.
    private func partnerEndedBeforeResponse() {
        guard let context = self.context else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenFailure { _ in
            context.channel.close(promise: nil)
        }
        context.triggerUserOutboundEvent(NodeEndedBeforeResponse(bytesToNode: self.link.bytesToNode), promise: promise)
    }

    private func partnerBecameWritable() {
        if self.pendingRead {
            self.pendingRead = false
            self.context?.read()
        }
    }

    private var partnerWritable: Bool {
        self.context?.channel.isWritable ?? false
    }
}

@available(*, unavailable)
extension TunnelHandler: Sendable {}

extension TunnelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.side {
        case .client: self.link.clientSent(self.unwrapInboundIn(data).readableBytes)
        case .node: self.link.nodeSent(self.unwrapInboundIn(data))
        }
        self.partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.side == .node {
            self.link.closed()
            if self.link.bytesFromNode == 0 {
                self.partner?.partnerEndedBeforeResponse()
                context.fireChannelInactive()
                return
            }
        }
        self.partner?.partnerCloseFull()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            if self.side == .node && self.link.bytesFromNode == 0 {
                // An empty answer: end the tunnel as a failure (channelInactive retries elsewhere).
                context.close(promise: nil)
                return
            }
            self.inputClosed = true
            if self.outputClosed {
                context.close(promise: nil)
            }
            self.partner?.partnerWriteEOF()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // channelInactive, which follows, settles the partner.
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.partner?.partnerBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner = self.partner, partner.partnerWritable {
            context.read()
        } else {
            self.pendingRead = true
        }
    }
}
