import NIOCore
import NIOHTTP1

/// Sends the WebSocket handshake request and, when the node answers anything but `101`, ends the
/// attempt. Removed once the upgrade is done; until then, it reports the connection's end.
final class UpgradeRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let endpoint: ClientEndpoint
    private let driver: ClientDriver
    private let generation: UInt64
    private var refusal: String?

    init(endpoint: ClientEndpoint, driver: ClientDriver, generation: UInt64) {
        self.endpoint = endpoint
        self.driver = driver
        self.generation = generation
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
        self.driver.connectionClosed(code: nil, reason: self.refusal ?? "closed during the WebSocket handshake", generation: self.generation)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.refusal = self.refusal ?? "\(error)"
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension UpgradeRequestHandler: Sendable {}
