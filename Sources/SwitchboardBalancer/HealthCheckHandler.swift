import NIOCore

/// One active health check on its own connection: sends `GET <path>` and succeeds only on a `200`
/// status line, read from at most 1 KB. Anything else (another status, EOF, error) is a failure.
final class HealthCheckHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: ByteBuffer
    private let promise: EventLoopPromise<Bool>
    private var received: ByteBuffer?

    init(path: String, host: String, promise: EventLoopPromise<Bool>) {
        self.request = ByteBuffer(
            string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: switchboard-balancer\r\nConnection: close\r\n\r\n")
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
        if let lineEnd = view.firstIndex(of: UInt8(ascii: "\n")) {
            let line = view[view.startIndex..<lineEnd]
            let ok = line.starts(with: "HTTP/1.1 200 ".utf8) || line.starts(with: "HTTP/1.0 200 ".utf8)
            self.promise.succeed(ok)
            context.close(promise: nil)
        } else if received.readableBytes > 1024 {
            self.promise.succeed(false)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.promise.succeed(false)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.promise.succeed(false)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension HealthCheckHandler: Sendable {}
