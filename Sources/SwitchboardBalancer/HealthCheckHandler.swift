import NIOCore

/// One active health check on its own connection. `http`: sends `GET <path>` and succeeds only on a
/// `200` status line. `webSocket`: sends a WebSocket upgrade for `<path>`, and after the `101` a masked
/// ping, and succeeds only when the first frame back is the pong (a draining node refuses the upgrade).
/// At most 1 KB is read; anything else (another status, another frame, EOF, error) is a failure.
final class HealthCheckHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What a check asks.
    enum Mode: Sendable, Hashable {
        case http
        case webSocket
    }

    private let request: ByteBuffer
    private let mode: Mode
    private let promise: EventLoopPromise<Bool>
    private var received: ByteBuffer?
    /// WebSocket mode: the `101` was read and the ping sent.
    private var upgraded = false

    /// The ping a WebSocket check sends: FIN + ping, masked, 4-byte payload "sbhc".
    static let pingFrame: [UInt8] = {
        let mask: [UInt8] = [0x5A, 0x17, 0xC3, 0x9E]
        let payload = Array("sbhc".utf8)
        return [0x89, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }()

    init(path: String, host: String, mode: Mode = .http, promise: EventLoopPromise<Bool>) {
        switch mode {
        case .http:
            self.request = ByteBuffer(
                string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: switchboard-balancer\r\nConnection: close\r\n\r\n")
        case .webSocket:
            self.request = ByteBuffer(
                string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: switchboard-balancer\r\nUpgrade: websocket\r\n"
                    + "Connection: Upgrade\r\nSec-WebSocket-Key: c3dpdGNoYm9hcmQtY2hlY2s=\r\nSec-WebSocket-Version: 13\r\n\r\n")
        }
        self.mode = mode
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
        if self.mode == .webSocket { return self.readWebSocket(context: context, received) }
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

    private func readWebSocket(context: ChannelHandlerContext, _ received: ByteBuffer) {
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
extension HealthCheckHandler: Sendable {}
