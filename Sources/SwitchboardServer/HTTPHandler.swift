import Logging
import NIOCore
import NIOHTTP1

/// Answers plain HTTP requests on the node's port: the demo page and the
/// browser client, health and readiness, the server API, and the SSE and
/// long-polling transports (docs/transports.md). WebSocket upgrades are taken
/// before this handler sees them; a request that reaches it is not upgraded.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let node: NodeContext
    private let api: ServerAPI
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false
    var responding = false
    /// A request is waiting for its one response (a second response would break the HTTP pipeline).
    private var requestOpen = false
    /// The connection carries an SSE stream now: nothing more is read as requests.
    var streaming = false
    /// The poll or `/rpc` session answering the current request.
    var collectingSession: ClientSession?
    var collectTimeout: Scheduled<Void>?
    /// The `client` of the current poll, counted against its limit.
    var pollKey = ""

    init(node: NodeContext) {
        self.node = node
        self.api = ServerAPI(node: node)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.streaming else { return }
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.body = nil
            self.tooLarge = false
        case .body(var chunk):
            guard !self.tooLarge else { return }
            if (self.body?.readableBytes ?? 0) + chunk.readableBytes > self.node.configuration.maxRequestBodySize {
                self.tooLarge = true
                self.body = nil
                return
            }
            if self.body == nil {
                self.body = chunk
            } else {
                self.body!.writeBuffer(&chunk)
            }
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            self.requestOpen = true
            let body = self.body ?? ByteBuffer()
            self.body = nil
            if self.tooLarge {
                return self.respond(context: context, head: head, .text(.payloadTooLarge, "request body too large"), close: true)
            }
            self.route(context: context, head: head, body: body)
        }
    }

    private func route(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch (head.method, path) {
        case (.GET, "/"), (.GET, "/index.html"):
            self.respond(context: context, head: head, HTTPResponse(
                status: .ok, contentType: "text/html; charset=utf-8", body: ByteBuffer(bytes: PackageResources.demo_html)))
        case (.GET, "/switchboard.js"):
            self.respond(context: context, head: head, HTTPResponse(
                status: .ok, contentType: "text/javascript; charset=utf-8", body: ByteBuffer(bytes: PackageResources.switchboard_js)))
        case (.GET, "/sse"):
            self.openEventStream(context: context, head: head)
        case (.POST, "/sse"):
            self.postSessionCommands(context: context, head: head, body: body)
        case (.POST, "/poll"):
            self.poll(context: context, head: head, body: body)
        case (.POST, "/rpc"):
            self.rpc(context: context, head: head, body: body)
        case (.GET, "/stats"):
            self.stats(context: context, head: head)
        case (_, "/sse"), (_, "/poll"), (_, "/rpc"):
            self.respond(context: context, head: head, .text(.methodNotAllowed, "see docs/transports.md for the methods"))
        case (.GET, "/metrics"):
            self.respond(context: context, head: head, HTTPResponse(
                status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8",
                body: ByteBuffer(string: self.node.metrics.exposition())))
        case (.GET, "/healthz"):
            self.respond(context: context, head: head, .json(.ok, #"{"status":"ok"}"#))
        case (.GET, "/readyz"):
            if self.node.isDraining {
                self.respond(context: context, head: head, .json(.serviceUnavailable, #"{"status":"draining"}"#))
            } else {
                self.respond(context: context, head: head, .json(.ok, #"{"status":"ready"}"#))
            }
        case (.GET, "/ws"), (.GET, "/echo"):
            if self.node.isDraining {
                var response = HTTPResponse.text(.serviceUnavailable, "draining: reconnect to another node")
                response.headers.append(("Retry-After", "1"))
                self.respond(context: context, head: head, response, close: true)
            } else if path == "/echo", !self.node.configuration.echoEndpoint {
                self.respond(context: context, head: head, .text(.notFound, "not found"))
            } else {
                self.respond(context: context, head: head, .text(.badRequest, "WebSocket upgrade required"))
            }
        case (.POST, _) where path.hasPrefix("/api/"):
            let method = String(path.dropFirst("/api/".count))
            let authorization = head.headers.first(name: "authorization")
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            self.responding = true
            self.api.handle(method: method, authorization: authorization, body: body)
                .hop(to: context.eventLoop)
                .whenComplete { result in
                    let (handler, context) = loopBound.value
                    handler.responding = false
                    switch result {
                    case .success(let response):
                        handler.respond(context: context, head: head, response)
                    case .failure:
                        handler.respond(context: context, head: head, .json(.internalServerError, #"{"error":{"code":100,"message":"internal error","temporary":true}}"#))
                    }
                }
        case (_, _) where path.hasPrefix("/api/"):
            self.respond(context: context, head: head, .text(.methodNotAllowed, "use POST"))
        default:
            self.respond(context: context, head: head, .text(.notFound, "not found"))
        }
    }

    func respond(context: ChannelHandlerContext, head: HTTPRequestHead, _ response: HTTPResponse, close: Bool = false) {
        guard self.requestOpen else {
            self.node.logger.error("a second response to one request was dropped", metadata: ["uri": "\(head.uri)"])
            return
        }
        self.requestOpen = false
        let keepAlive = head.isKeepAlive && !close
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.readableBytes))
        headers.add(name: "Cache-Control", value: "no-store")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let responseHead = HTTPResponseHead(version: head.version, status: response.status, headers: headers)
        context.write(Self.wrapOutboundOut(.head(responseHead)), promise: nil)
        if head.method != .HEAD {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        let done = context.writeAndFlush(Self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// The response is being written some other way (an SSE stream).
    func markResponded() {
        self.requestOpen = false
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.endCollecting()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent, !self.responding, !self.streaming {
            // A client that opens a socket and does not finish a request loses it.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension HTTPHandler: Sendable {}
