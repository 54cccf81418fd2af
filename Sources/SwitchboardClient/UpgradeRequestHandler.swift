import NIOCore
import NIOHTTP1

/// Sends the WebSocket handshake request and, when the node answers anything but `101`, ends the
/// attempt. Removed once the upgrade is done; until then, it reports the connection's end to
/// `onEnd` (with why).
final class UpgradeRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let endpoint: ClientEndpoint
    private let onEnd: (String) -> Void
    private var refusal: String?

    init(endpoint: ClientEndpoint, onEnd: @escaping (String) -> Void) {
        self.endpoint = endpoint
        self.onEnd = onEnd
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: self.endpoint.hostHeader)
        headers.add(name: "User-Agent", value: "switchboard-swift")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: self.endpoint.path, headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Reached only when the upgrade was refused.
        if case .head(let head) = Self.unwrapInboundIn(data) {
            self.refusal = "upgrade refused: HTTP \(head.status.code)"
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.onEnd(self.refusal ?? "closed during the WebSocket handshake")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.refusal = self.refusal ?? "\(error)"
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension UpgradeRequestHandler: Sendable {}
