import NIOCore
import NIOHTTP1

/// A publisher that sends through the HTTP server API: `POST /api/publish`
/// with `Authorization: apikey K`, pipelined up to `window` requests in
/// flight on one keep-alive connection. Counts 200 results as acks and
/// anything else (HTTP error, `{"error":...}` body) as publish errors.
final class APIPublishHandler: ChannelInboundHandler, RemovableChannelHandler, PublishEndpoint {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let loop: LoopCounters
    private let window: Int
    private let baseHeaders: HTTPHeaders
    private var context: ChannelHandlerContext?
    private var inFlight = 0
    private var status: UInt = 0
    private var bodyIsError = false
    private var body = ByteBuffer()
    private var closed = false

    init(loop: LoopCounters, url: BenchURL, apiKey: String, window: Int) {
        self.loop = loop
        self.window = window
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: url.hostHeader)
        headers.add(name: "Authorization", value: "apikey \(apiKey)")
        headers.add(name: "Content-Type", value: "application/json")
        self.baseHeaders = headers
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil  // the context keeps its handler: do not keep the context
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.closed, !self.loop.closing {
            self.loop.counters.noteError("the HTTP API connection closed with \(self.inFlight) requests in flight")
            self.loop.counters.publishErrors += Int64(self.inFlight)
        }
        self.closed = true
        self.context = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.loop.closing { self.loop.counters.noteError("HTTP API connection: \(error)") }
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.status = head.status.code
            self.body.clear()
        case .body(var part):
            if self.body.readableBytes < 256 { self.body.writeBuffer(&part) }
        case .end:
            self.inFlight -= 1
            let isError = self.body.withUnsafeReadableBytes { FrameScanner.hasPrefix($0, #"{"error""#) }
            if self.status == 200, !isError {
                self.loop.counters.publishAcks += 1
            } else {
                self.loop.counters.publishErrors += 1
                self.loop.counters.noteError("HTTP API: \(self.status) \(String(buffer: self.body))")
            }
        }
    }

    var isOpen: Bool { !self.closed && self.context != nil }

    var canPublish: Bool {
        guard !self.closed, let context = self.context else { return false }
        return self.inFlight < self.window && context.channel.isWritable
    }

    func publish(channel: String, seq: Int64, source: Int?, size: Int) {
        guard let context = self.context, !self.closed else { return }
        var body = context.channel.allocator.buffer(capacity: size + channel.utf8.count + 48)
        body.writeAPIPublishBody(channel: channel, seq: seq, source: source, size: size)
        var headers = self.baseHeaders
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/api/publish", headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.write(Self.wrapOutboundOut(.end(nil)), promise: nil)
        self.inFlight += 1
    }

    func flush() {
        self.context?.flush()
    }
}

@available(*, unavailable)
extension APIPublishHandler: Sendable {}
