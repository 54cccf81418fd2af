import Foundation
import NIOCore
import NIOHTTP1

/// One command POST (`POST /sse?session=…`, `Connection: close`): sends the batch, reads the status
/// and at most 512 bytes of the body, and tells the connection; no answer within `timeout`, or a
/// connection that ends first, is a failed POST.
final class SSECommandPostHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private enum State {
        case sending
        case reading(status: UInt, body: ByteBuffer)
        case done
    }

    private let connection: SSEClientConnection
    private let target: String
    private let body: ByteBuffer
    private let timeout: TimeAmount
    private var state = State.sending
    private var deadline: Scheduled<Void>?

    init(connection: SSEClientConnection, target: String, body: ByteBuffer, timeout: TimeAmount) {
        self.connection = connection
        self.target = target
        self.body = body
        self.timeout = timeout
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: self.connection.endpoint.hostHeader)
        headers.add(name: "User-Agent", value: "switchboard-swift")
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(self.body.readableBytes))
        headers.add(name: "Connection", value: "close")
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: self.target, headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(self.body))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        self.deadline = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) {
            self.finish(context: context) { $0.postFailed("command POST not answered in time") }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (Self.unwrapInboundIn(data), self.state) {
        case (.head(let head), .sending):
            self.state = .reading(status: head.status.code, body: ByteBuffer())
        case (.body(var part), .reading(let status, var body)):
            let room = max(0, 512 - body.readableBytes)
            if let slice = part.readSlice(length: min(room, part.readableBytes)) { body.writeImmutableBuffer(slice) }
            self.state = .reading(status: status, body: body)
        case (.end, .reading(let status, let body)):
            let text = String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)
            self.finish(context: context) { $0.postAnswered(status: status, body: text) }
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.finish(context: context) { $0.postFailed("command POST: connection closed before the answer") }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.finish(context: context) { $0.postFailed("command POST failed: \(error)") }
    }

    private func finish(context: ChannelHandlerContext, _ report: (SSEClientConnection) -> Void) {
        if case .done = self.state { return }
        self.state = .done
        self.deadline?.cancel()
        self.deadline = nil
        context.close(promise: nil)
        report(self.connection)
    }
}

@available(*, unavailable)
extension SSECommandPostHandler: Sendable {}
