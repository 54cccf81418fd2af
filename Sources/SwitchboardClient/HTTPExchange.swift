import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One HTTP/1.1 request on a connection of its own (`Connection: close`), for the transports that
/// carry commands and polls over plain requests: the status and at most `maximumBodySize` bytes of
/// the body come back once, or an error (no answer within `timeout`, the connection lost, a body
/// over the limit). `cancel()` ends it without an answer. Loop-confined.
final class HTTPExchange {
    /// The answer: status and body.
    struct Answer {
        var status: UInt
        var body: ByteBuffer
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private var channel: (any Channel)?
    private var onAnswer: ((Result<Answer, Failure>) -> Void)?

    /// An exchange that reports to `onAnswer` once `start` has been called (which may report at once).
    init(onAnswer: @escaping (Result<Answer, Failure>) -> Void) {
        self.onAnswer = onAnswer
    }

    /// Starts `method target` with `body` (and `headers` besides Host, Content-Length and Connection).
    func start(
        endpoint: ClientEndpoint, sslContext: NIOSSLContext?, eventLoop: any EventLoop, method: HTTPMethod, target: String,
        headers: [(String, String)], body: ByteBuffer, maximumBodySize: Int, timeout: TimeAmount
    ) {
        let exchange = self
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: target)
        head.headers.add(name: "Host", value: endpoint.hostHeader)
        head.headers.add(name: "User-Agent", value: "switchboard-swift")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        head.headers.add(name: "Connection", value: "close")
        let bound = NIOLoopBound(exchange, eventLoop: eventLoop)
        let handler = NIOLoopBound(
            HTTPExchangeHandler(head: head, body: body, maximumBodySize: maximumBodySize, timeout: timeout) { result in
                bound.value.finish(result)
            }, eventLoop: eventLoop)
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try endpoint.addTLS(sslContext, to: channel)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler.value)
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    if exchange.onAnswer == nil {
                        channel.close(promise: nil)  // cancelled meanwhile
                    } else {
                        exchange.channel = channel
                    }
                case .failure(let error):
                    exchange.finish(.failure(Failure(description: "\(error)")))
                }
            }
    }

    /// Ends the exchange; its answer, if any comes, is dropped.
    func cancel() {
        self.onAnswer = nil
        self.channel?.close(promise: nil)
        self.channel = nil
    }

    private func finish(_ result: Result<Answer, Failure>) {
        guard let onAnswer = self.onAnswer else { return }
        self.onAnswer = nil
        self.channel = nil
        onAnswer(result)
    }
}

@available(*, unavailable)
extension HTTPExchange: Sendable {}

/// Sends one request, reads one response; reports it (or why there is none) once and closes.
final class HTTPExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private enum State {
        case sending
        /// The head came; the body so far is in `received`.
        case reading(status: UInt)
        case done
    }

    private let head: HTTPRequestHead
    private let body: ByteBuffer
    private let maximumBodySize: Int
    private let timeout: TimeAmount
    private let report: (Result<HTTPExchange.Answer, HTTPExchange.Failure>) -> Void
    private var state = State.sending
    private var received = ByteBuffer()
    private var deadline: Scheduled<Void>?

    init(
        head: HTTPRequestHead, body: ByteBuffer, maximumBodySize: Int, timeout: TimeAmount,
        report: @escaping (Result<HTTPExchange.Answer, HTTPExchange.Failure>) -> Void
    ) {
        self.head = head
        self.body = body
        self.maximumBodySize = maximumBodySize
        self.timeout = timeout
        self.report = report
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(Self.wrapOutboundOut(.head(self.head)), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(self.body))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
        self.deadline = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) {
            self.finish(context: context, .failure(HTTPExchange.Failure(description: "no answer in time")))
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (Self.unwrapInboundIn(data), self.state) {
        case (.head(let head), .sending):
            self.state = .reading(status: head.status.code)
        case (.body(let part), .reading):
            guard self.received.readableBytes + part.readableBytes <= self.maximumBodySize else {
                self.finish(context: context, .failure(HTTPExchange.Failure(description: "an answer over \(self.maximumBodySize) bytes")))
                return
            }
            self.received.writeImmutableBuffer(part)
        case (.end, .reading(let status)):
            self.finish(context: context, .success(HTTPExchange.Answer(status: status, body: self.received)))
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.finish(context: context, .failure(HTTPExchange.Failure(description: "connection closed before the answer")))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.finish(context: context, .failure(HTTPExchange.Failure(description: "\(error)")))
    }

    private func finish(context: ChannelHandlerContext, _ result: Result<HTTPExchange.Answer, HTTPExchange.Failure>) {
        if case .done = self.state { return }
        self.state = .done
        self.deadline?.cancel()
        self.deadline = nil
        context.close(promise: nil)
        self.report(result)
    }
}

@available(*, unavailable)
extension HTTPExchangeHandler: Sendable {}
