import NIOCore

/// Sends one HTTP request on a new connection and reads only the status code of the answer's first
/// line, then closes. The balancer's own requests to the nodes (the HTTP health check, the rebalance
/// request) only need the status, so no HTTP codec is set up for them. At most 1 KB is read: a peer
/// that sends more without a line end is not an HTTP server worth waiting for.
final class HTTPStatusLineHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What the peer answered.
    enum Outcome: Sendable, Hashable {
        /// The HTTP status code of the answer's first line.
        case status(Int)
        /// No status: no line end in the first 1 KB, not an HTTP status line, closed before answering
        /// or an error. Callers also use it when the connect fails or the deadline passes.
        case failed(String)
    }

    private let request: ByteBuffer
    private let promise: EventLoopPromise<Outcome>
    private var received: ByteBuffer?

    /// `request` is written as soon as the connection is up; `promise` gets the outcome.
    init(request: ByteBuffer, promise: EventLoopPromise<Outcome>) {
        self.request = request
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(self.wrapOutboundOut(self.request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = self.unwrapInboundIn(data)
        if self.received == nil { self.received = bytes } else { self.received!.writeBuffer(&bytes) }
        guard let received = self.received else { return }
        let view = received.readableBytesView
        guard let lineEnd = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if received.readableBytes > 1024 {
                self.promise.succeed(.failed("no status line in the first 1 KB"))
                context.close(promise: nil)
            }
            return
        }
        self.promise.succeed(Self.status(of: view[view.startIndex..<lineEnd]))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.promise.succeed(.failed("closed before answering"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.promise.succeed(.failed("\(error)"))
        context.close(promise: nil)
    }

    /// `HTTP/1.1 200 OK` -> 200 (the line's CR, if any, is not part of it, so a line without a
    /// reason phrase, `HTTP/1.1 200`, reads as 200 too); anything else is a failure.
    static func status(of line: ByteBufferView) -> Outcome {
        var text = Substring(String(decoding: line, as: UTF8.self))
        if text.hasSuffix("\r") { text = text.dropLast() }
        let parts = text.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0] == "HTTP/1.1" || parts[0] == "HTTP/1.0", parts[1].utf8.count == 3,
            let code = Int(parts[1]), (100...599).contains(code)
        else { return .failed("not an HTTP status line") }
        return .status(code)
    }
}

@available(*, unavailable)
extension HTTPStatusLineHandler: Sendable {}
