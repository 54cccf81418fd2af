import NIOCore

/// One WebSocket health check on its own connection: sends a WebSocket upgrade for `<path>`, and after
/// the `101` a masked ping, and succeeds only when the first frame back is the pong. This checks what
/// clients use (a draining node refuses the upgrade), which a plain HTTP check does not. At most 1 KB
/// is read before the `101`; anything else (another status, another frame, EOF, error) is a failure.
final class WebSocketHealthCheckHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: ByteBuffer
    private let promise: EventLoopPromise<Bool>
    private var received: ByteBuffer?
    /// The `101` was read and the ping sent.
    private var upgraded = false

    /// The ping a check sends: FIN + ping, masked, 4-byte payload "sbhc".
    static let pingFrame: [UInt8] = {
        let mask: [UInt8] = [0x5A, 0x17, 0xC3, 0x9E]
        let payload = Array("sbhc".utf8)
        return [0x89, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }()

    /// `promise` gets whether the node is up.
    init(path: String, host: String, promise: EventLoopPromise<Bool>) {
        // The key is 16 bytes in base64 ("switchboard-chk!"), as RFC 6455 asks and a node checks.
        self.request = ByteBuffer(
            string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: switchboard-balancer\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Key: c3dpdGNoYm9hcmQtY2hrIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
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
        if !self.upgraded {
            guard let end = Self.headEnd(view) else {
                if received.readableBytes > 1024 { self.finish(context: context, false) }
                return
            }
            guard view.starts(with: "HTTP/1.1 101 ".utf8) else { return self.finish(context: context, false) }
            self.upgraded = true
            self.received!.moveReaderIndex(to: end)
            context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(bytes: Self.pingFrame)), promise: nil)
            if self.received!.readableBytes == 0 { return }
        }
        // The first frame after the 101 must be the pong (unmasked, FIN, opcode 0xA).
        guard let first = self.received!.readableBytesView.first else { return }
        self.finish(context: context, first == 0x8A)
    }

    private func finish(context: ChannelHandlerContext, _ ok: Bool) {
        self.promise.succeed(ok)
        context.close(promise: nil)
    }

    private static func headEnd(_ view: ByteBufferView) -> Int? {
        var i = view.startIndex
        while let cr = view[i...].firstIndex(of: UInt8(ascii: "\r")) {
            guard cr + 3 < view.endIndex else { return nil }
            if view[cr + 1] == UInt8(ascii: "\n") && view[cr + 2] == UInt8(ascii: "\r") && view[cr + 3] == UInt8(ascii: "\n") {
                return cr + 4
            }
            i = cr + 1
        }
        return nil
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
extension WebSocketHealthCheckHandler: Sendable {}
