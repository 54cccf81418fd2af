import NIOCore
import NIOHTTP1

/// Sends the `GET` that NIO's client upgrade handler turns into a WebSocket
/// upgrade request, and fails the handshake if the server answers anything
/// but 101 or closes first. Removed from the pipeline once upgraded.
final class UpgradeRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let url: BenchURL
    private let established: EventLoopPromise<Void>

    init(url: BenchURL, established: EventLoopPromise<Void>) {
        self.url = url
        self.established = established
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: self.url.hostHeader)
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: self.url.path, headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // only reached when the upgrade was refused
        if case .head(let head) = Self.unwrapInboundIn(data) {
            self.established.fail(BenchError(.connection, "upgrade refused: HTTP \(head.status.code)"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.established.fail(BenchError(.connection, "closed during the WebSocket handshake"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.established.fail(error)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension UpgradeRequestHandler: Sendable {}
