import CoreMetrics
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
    /// Most body bytes the current request may send (by path: the API takes more than transports).
    private var bodyLimit = 0
    /// The request was answered before its body was read (413): what is left of it is dropped.
    private var discardingBody = false
    /// The connection's client address, as the per-address caps count it.
    let clientAddress: String
    /// The deadline the connection is under now: its next request head, or the body of the current one.
    private var deadline: RequestDeadline
    private var deadlineTimer = RequestDeadlineTimer()
    /// A request is waiting for its one response (a second response would break the HTTP pipeline).
    private var requestOpen = false
    /// The connection carries an SSE stream now: nothing more is read as requests.
    var streaming = false
    /// The poll or `/rpc` session answering the current request.
    var collectingSession: ClientSession?
    var collectTimeout: Scheduled<Void>?
    /// The keys the current poll is counted under (its `client` field and address).
    var pollKey: PollKey?

    /// - Parameter headDeadline: when the first request's head must be complete (counted from the accept).
    init(node: NodeContext, clientAddress: String, headDeadline: NIODeadline) {
        self.node = node
        self.api = ServerAPI(node: node)
        self.clientAddress = clientAddress
        self.deadline = .head(headDeadline)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.armDeadline(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadlineTimer.stop()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.streaming else { return }
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.body = nil
            self.discardingBody = false
            self.requestOpen = true
            self.deadline = .body(.now() + .milliseconds(Int64(self.node.configuration.requestTimeout * 1000)))
            self.armDeadline(context: context)
            self.bodyLimit = Route(uri: head.uri).bodyLimit(self.node.configuration)
            if let declared = head.headers.first(name: "content-length").flatMap({ Int($0) }), declared > self.bodyLimit {
                return self.refuseBody(context: context, head: head)
            }
        case .body(var chunk):
            guard !self.discardingBody, let head = self.head else { return }
            if (self.body?.readableBytes ?? 0) + chunk.readableBytes > self.bodyLimit {
                // Refused as soon as it passes the limit: never buffered past it.
                return self.refuseBody(context: context, head: head)
            }
            if self.body == nil {
                self.body = chunk
            } else {
                self.body!.writeBuffer(&chunk)
            }
        case .end:
            guard !self.discardingBody, let head = self.head else { return }
            self.head = nil
            self.deadline = .none
            self.armDeadline(context: context)
            let body = self.body ?? ByteBuffer()
            self.body = nil
            self.route(context: context, head: head, body: body)
        }
    }

    /// Answers 413 at once and closes; the rest of the body is not read into memory.
    private func refuseBody(context: ChannelHandlerContext, head: HTTPRequestHead) {
        self.discardingBody = true
        self.body = nil
        self.head = nil
        self.deadline = .none
        self.armDeadline(context: context)
        self.respond(context: context, head: head, Self.error(.payloadTooLarge, "request body larger than \(self.bodyLimit) bytes"), close: true)
    }

    /// Schedules the timer for the current deadline (cancelling the previous one).
    private func armDeadline(context: ChannelHandlerContext) {
        self.deadlineTimer.stop()
        guard let at = self.deadline.instant else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.deadlineTimer.arm(at: at, on: context.eventLoop) {
            let (handler, context) = loopBound.value
            handler.deadlineTimer.fired()
            handler.deadlinePassed(context: context)
        }
    }

    private func deadlinePassed(context: ChannelHandlerContext) {
        switch self.deadline {
        case .none:
            return
        case .head:
            // The head never completed (or a kept-alive connection stayed silent): no request to answer.
            self.node.metrics.requestTimeouts.increment()
            context.close(promise: nil)
        case .body:
            self.node.metrics.requestTimeouts.increment()
            self.deadline = .none
            self.discardingBody = true
            self.body = nil
            if let head = self.head {
                self.head = nil
                self.respond(context: context, head: head, Self.error(.requestTimeout, "request body not complete in time"), close: true)
            } else {
                context.close(promise: nil)
            }
        }
    }

    private func route(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        let route = Route(uri: head.uri)
        if route.isClientTransport, !self.node.admitsOrigin(head) {
            // Another site's page: no upgrade, no stream, no command (CORS alone would still let a
            // simple POST run); see docs/security.md.
            self.node.metrics.auth.count(.origin)
            return self.respond(context: context, head: head, .text(.forbidden, "origin not allowed"))
        }
        switch (head.method, route) {
        case (.OPTIONS, .eventStream), (.OPTIONS, .poll), (.OPTIONS, .rpc):
            var response = HTTPResponse(status: .noContent, contentType: "text/plain", body: ByteBuffer())
            response.headers.append(("Access-Control-Allow-Methods", "GET, POST"))
            response.headers.append(("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID, Authorization"))
            response.headers.append(("Access-Control-Max-Age", "600"))
            self.respond(context: context, head: head, response)
        case (.GET, .demoPage):
            self.respond(context: context, head: head, HTTPResponse(
                status: .ok, contentType: "text/html; charset=utf-8", body: ByteBuffer(bytes: PackageResources.demo_html)))
        case (.GET, .clientScript):
            self.respond(context: context, head: head, HTTPResponse(
                status: .ok, contentType: "text/javascript; charset=utf-8", body: ByteBuffer(bytes: PackageResources.switchboard_js)))
        case (.GET, .eventStream):
            self.openEventStream(context: context, head: head, body: nil)
        case (.POST, .eventStream) where !HTTPQuery(uri: head.uri).contains("session"):
            // No session named: the body is the connect params of a new stream (a token stays out of the URL).
            self.openEventStream(context: context, head: head, body: body)
        case (.POST, .eventStream):
            self.postSessionCommands(context: context, head: head, body: body)
        case (.POST, .poll):
            self.poll(context: context, head: head, body: body)
        case (.POST, .rpc):
            self.rpc(context: context, head: head, body: body)
        case (.GET, .stats):
            self.stats(context: context, head: head)
        case (_, .eventStream), (_, .poll), (_, .rpc):
            self.respond(context: context, head: head, .text(.methodNotAllowed, "see docs/transports.md for the methods"))
        case (.GET, .metrics):
            self.respond(context: context, head: head, HTTPResponse(
                status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8",
                body: ByteBuffer(string: self.node.metrics.exposition())))
        case (.GET, .health):
            self.respond(context: context, head: head, .json(.ok, #"{"status":"ok"}"#))
        case (.GET, .readiness):
            if self.node.isDraining {
                self.respond(context: context, head: head, .json(.serviceUnavailable, #"{"status":"draining"}"#))
            } else {
                self.respond(context: context, head: head, .json(.ok, #"{"status":"ready"}"#))
            }
        case (.GET, .webSocket), (.GET, .echo):
            if self.node.isDraining {
                var response = HTTPResponse.text(.serviceUnavailable, "draining: reconnect to another node")
                response.headers.append(("Retry-After", "1"))
                self.respond(context: context, head: head, response, close: true)
            } else if !route.acceptsUpgrade(echoEnabled: self.node.configuration.echoEndpoint) {
                self.respond(context: context, head: head, .text(.notFound, "not found"))
            } else {
                self.respond(context: context, head: head, .text(.badRequest, "WebSocket upgrade required"))
            }
        case (.POST, .api(let method)):
            let authorization = head.headers.first(name: "authorization")
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            self.api.handle(method: String(method), authorization: authorization, body: body)
                .hop(to: context.eventLoop)
                .whenComplete { result in
                    let (handler, context) = loopBound.value
                    switch result {
                    case .success(let response):
                        handler.respond(context: context, head: head, response)
                    case .failure:
                        handler.respond(context: context, head: head, .json(.internalServerError, #"{"error":{"code":100,"message":"internal error","temporary":true}}"#))
                    }
                }
        case (_, .api):
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
        if Route(uri: head.uri).isClientTransport {
            for (name, value) in self.node.corsHeaders(head) { headers.add(name: name, value: value) }
        }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let responseHead = HTTPResponseHead(version: head.version, status: response.status, headers: headers)
        context.write(Self.wrapOutboundOut(.head(responseHead)), promise: nil)
        if head.method != .HEAD {
            context.write(Self.wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        let done = context.writeAndFlush(Self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else if !self.streaming {
            // A kept-alive connection has the head deadline again for its next request.
            self.deadline = .head(.now() + .milliseconds(Int64(self.node.configuration.headTimeout * 1000)))
            self.armDeadline(context: context)
        }
    }

    /// The response is being written some other way (an SSE stream): no deadline any more.
    func markResponded() {
        self.requestOpen = false
        self.deadline = .none
        self.deadlineTimer.stop()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.endCollecting()
        context.fireChannelInactive()
    }

    /// A request the HTTP decoder could not read (NIO's error handler has answered 400): the
    /// byte stream has no request boundaries any more, so the connection ends.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A refused WebSocket upgrade is reported here before its request arrives as plain HTTP
        // (which answers it): not a reason to close.
        if error is WebSocketUpgrader.UpgradeError { return }
        self.endCollecting()
        context.close(promise: nil)
    }

}

@available(*, unavailable)
extension HTTPHandler: Sendable {}

/// The deadline an HTTP connection is under.
enum RequestDeadline: Hashable {
    /// Waiting for a request head, which must be complete by then.
    case head(NIODeadline)
    /// Reading a request's body, which must be complete by then.
    case body(NIODeadline)
    /// A request is being answered (or the connection is a stream): the answer has its own timeouts.
    case none

    var instant: NIODeadline? {
        switch self {
        case .head(let at), .body(let at): return at
        case .none: return nil
        }
    }
}

/// What a waiting poll is counted under, against the per-client and per-address caps.
struct PollKey {
    var client: String
    var address: String
}
