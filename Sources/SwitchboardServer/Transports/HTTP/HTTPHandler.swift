import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardAuth
import SwitchboardBroker
import SwitchboardCore

/// Answers plain HTTP requests on the node's port: the demo page and the
/// browser client, health and readiness, the server API, and the SSE and
/// long-polling transports (docs/transports.md). WebSocket upgrades are taken
/// before this handler sees them; a request that reaches it is not upgraded.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Where the connection is in its request/response cycle.
    enum State {
        /// Waiting for a request head, which must be complete by the deadline.
        case idle(headDeadline: NIODeadline)
        /// Reading the body of `head`, which must be complete by the deadline.
        case receiving(HTTPRequestHead, body: ByteBuffer?, deadline: NIODeadline)
        /// The request is routed; its one response is due.
        case answering(HTTPRequestHead)
        /// A poll or `/rpc` session is collecting the answer to `head`.
        case collecting(HTTPRequestHead, Collecting)
        /// The connection carries an SSE stream: nothing more is read as requests.
        case streaming
        /// The last response said `Connection: close`: what still arrives is dropped.
        case closing

        /// When the connection times out in this state, if ever.
        var deadline: NIODeadline? {
            switch self {
            case .idle(let at), .receiving(_, _, let at): return at
            case .answering, .collecting, .streaming, .closing: return nil
            }
        }

        /// The request whose response is due, if one is.
        var openRequest: HTTPRequestHead? {
            switch self {
            case .receiving(let head, _, _), .answering(let head), .collecting(let head, _): return head
            case .idle, .streaming, .closing: return nil
            }
        }
    }

    /// The short-lived session answering a poll or `/rpc` call, and what ends it.
    struct Collecting {
        var session: ClientSession
        var timeout: Scheduled<Void>
        /// The keys the poll is counted under (nil for `/rpc`).
        var pollKey: PollKey?
    }

    let node: NodeContext
    private let api: ServerAPI
    private var state: State
    /// Most body bytes the current request may send (by path: the API takes more than transports).
    private var bodyLimit = 0
    /// The connection's client address, as the per-address caps count it.
    let clientAddress: String
    private var deadlineTimer = RequestDeadlineTimer()
    /// Requests taken in a row while the outbound limit was passed (pipelined, answers unread).
    private var answersWhileUnwritable = 0
    static let maximumAnswersWhileUnwritable = 4
    /// The connection's command rate, carried from one `/rpc` call to the next: a kept-alive
    /// connection sending calls back to back is held to the rate a WebSocket connection is
    /// (each call's session would otherwise start with a full bucket).
    private var commandLimiter: CommandRateLimiter?
    /// The connection comes from a trusted proxy, which may carry many clients' requests on it
    /// (upstream keep-alive): its `/rpc` calls do not share one command rate.
    private let sharedByClients: Bool

    /// - Parameter headDeadline: when the first request's head must be complete (counted from the accept).
    init(node: NodeContext, clientAddress: String, headDeadline: NIODeadline, sharedByClients: Bool = false) {
        self.node = node
        self.sharedByClients = sharedByClients
        self.api = ServerAPI(node: node)
        self.clientAddress = clientAddress
        self.state = .idle(headDeadline: headDeadline)
    }

    /// The static files, made once: every answer shares these bytes instead of copying them.
    private static let demoPage = ByteBuffer(bytes: PackageResources.demo_html)
    private static let clientScript = ByteBuffer(bytes: PackageResources.switchboard_js)

    /// The checks every client-transport request passes, as the node is now.
    var requestGuard: TransportRequestGuard {
        TransportRequestGuard(maximumBodySize: self.node.configuration.maxMessageSize, isDraining: self.node.isDraining)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.armDeadline(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadlineTimer.stop()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Self.unwrapInboundIn(data)
        switch (self.state, part) {
        case (.idle, .head):
            // The peer sends requests without reading the answers (NIO's pipelining handler hands
            // over the next request once an answer is written, not once it is sent): past the
            // outbound limit, a few more answers may queue (one answer can be larger than the limit
            // on its own), then the connection ends, so answers cannot pile up in memory without
            // bound. A client that reads its answers before asking again never gets here.
            self.answersWhileUnwritable = context.channel.isWritable ? 0 : self.answersWhileUnwritable + 1
            guard self.answersWhileUnwritable <= Self.maximumAnswersWhileUnwritable else {
                self.node.fanout(for: context.eventLoop).counters.slowConsumers += 1
                self.state = .closing
                return context.close(promise: nil)
            }
            guard case .head(let head) = part else { return }
            let deadline = NIODeadline.now() + .milliseconds(Int64(self.node.configuration.requestTimeout * 1000))
            self.state = .receiving(head, body: nil, deadline: deadline)
            self.armDeadline(context: context)
            let route = Route(uri: head.uri)
            self.bodyLimit = route.bodyLimit(self.node.configuration)
            if case .api = route {
                // Refused from the head: a body of up to `maxRequestBodySize` is read (and held for
                // the request deadline) only for a POST with the key. The connection is closed, since
                // the unread body would be taken for the next request; another method that announces
                // no body is answered 405 in turn (`route`), keeping a pipelined request behind it.
                if head.method != .POST, Self.announcesBody(head) {
                    return self.respond(context: context, head: head, .text(.methodNotAllowed, "use POST"), close: true)
                }
                if head.method == .POST, !self.api.isAuthorized(head.headers.first(name: "authorization")) {
                    return self.respond(context: context, head: head, ServerAPI.unauthorized, close: true)
                }
            }
            if let declared = head.headers.first(name: "content-length").flatMap({ Int($0) }), declared > self.bodyLimit {
                return self.refuseBody(context: context, head: head)
            }
        case (.receiving(let head, var body, let deadline), .body(var chunk)):
            if (body?.readableBytes ?? 0) + chunk.readableBytes > self.bodyLimit {
                // Refused as soon as it passes the limit: never buffered past it.
                return self.refuseBody(context: context, head: head)
            }
            // Out of the state while it grows, so the buffer is not copied.
            self.state = .answering(head)
            if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
            self.state = .receiving(head, body: body, deadline: deadline)
        case (.receiving(let head, let body, _), .end):
            self.state = .answering(head)
            self.armDeadline(context: context)
            self.route(context: context, head: head, body: body ?? ByteBuffer())
        case (.streaming, _), (.closing, _):
            return
        case (.idle, .body), (.idle, .end), (.receiving, .head), (.answering, _), (.collecting, _):
            // NIO's pipelining handler holds the next request back until this one is answered,
            // and its decoder sends parts in order: none of these can happen.
            self.node.logger.error("an HTTP request part out of order was dropped", metadata: ["part": "\(part)"])
        }
    }

    /// Whether a request head announces a body: a `Content-Length` other than 0, or a
    /// `Transfer-Encoding`.
    static func announcesBody(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "transfer-encoding")
            || head.headers[canonicalForm: "content-length"].contains { $0 != "0" }
    }

    /// Answers 413 at once and closes; the rest of the body is not read into memory.
    private func refuseBody(context: ChannelHandlerContext, head: HTTPRequestHead) {
        self.respond(context: context, head: head, .error(.payloadTooLarge, "request body larger than \(self.bodyLimit) bytes"), close: true)
    }

    /// Schedules the timer for the current state's deadline (cancelling the previous one).
    private func armDeadline(context: ChannelHandlerContext) {
        self.deadlineTimer.stop()
        guard let at = self.state.deadline else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.deadlineTimer.arm(at: at, on: context.eventLoop) {
            let (handler, context) = loopBound.value
            handler.deadlineTimer.fired()
            handler.deadlinePassed(context: context)
        }
    }

    private func deadlinePassed(context: ChannelHandlerContext) {
        switch self.state {
        case .idle:
            // The head never completed (or a kept-alive connection stayed silent): no request to answer.
            self.node.metrics.requestTimeouts.increment()
            self.state = .closing
            context.close(promise: nil)
        case .receiving(let head, _, _):
            self.node.metrics.requestTimeouts.increment()
            self.respond(context: context, head: head, .error(.requestTimeout, "request body not complete in time"), close: true)
        case .answering, .collecting, .streaming, .closing:
            return
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
            self.respond(context: context, head: head, HTTPResponse(status: .ok, contentType: "text/html; charset=utf-8", body: Self.demoPage))
        case (.GET, .clientScript):
            self.respond(context: context, head: head, HTTPResponse(
                status: .ok, contentType: "text/javascript; charset=utf-8", body: Self.clientScript))
        case (.GET, .eventStream):
            EventStreamEndpoint(node: self.node).open(on: self, context: context, head: head, body: nil)
        case (.POST, .eventStream) where !HTTPQuery(uri: head.uri).contains("session"):
            // No session named: the body is the connect params of a new stream (a token stays out of the URL).
            EventStreamEndpoint(node: self.node).open(on: self, context: context, head: head, body: body)
        case (.POST, .eventStream):
            EventStreamEndpoint(node: self.node).commands(on: self, context: context, head: head, body: body)
        case (.POST, .poll):
            LongPollEndpoint(node: self.node).serve(on: self, context: context, head: head, body: body)
        case (.POST, .rpc):
            RPCEndpoint(node: self.node).serve(on: self, context: context, head: head, body: body)
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
            if let refusal = self.requestGuard.refusal(.startsSession, body: nil) {
                self.respond(context: context, head: head, refusal.response, close: refusal.closesConnection)
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
                        handler.respond(context: context, head: head, .error(.serviceUnavailable, "temporarily unavailable, try again"))
                    }
                }
        case (_, .api):
            self.respond(context: context, head: head, .text(.methodNotAllowed, "use POST"))
        default:
            self.respond(context: context, head: head, .text(.notFound, "not found"))
        }
    }

    /// Writes the one response to the open request (a second one would break the HTTP pipeline,
    /// so it is dropped and logged). `close` ends the connection after it.
    func respond(context: ChannelHandlerContext, head: HTTPRequestHead, _ response: HTTPResponse, close: Bool = false) {
        // An answer that waited (the broker, another node) for a client gone meanwhile: nothing to
        // write, and no deadline to arm for a next request (its timer would keep the pipeline).
        guard context.channel.isActive else {
            self.state = .closing
            return
        }
        guard self.state.openRequest != nil else {
            self.node.logger.error("a second response to one request was dropped", metadata: ["uri": "\(head.uri)"])
            return
        }
        let keepAlive = head.isKeepAlive && !close
        // A kept-alive connection has the head deadline again for its next request.
        self.state = keepAlive ? .idle(headDeadline: .now() + .milliseconds(Int64(self.node.configuration.headTimeout * 1000))) : .closing
        self.armDeadline(context: context)
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
            // A peer that never reads must not hold the socket: the last response gets the head
            // timeout to leave, then the connection is closed whatever is still unsent.
            let cutoff = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(self.node.configuration.headTimeout * 1000))) {
                context.close(promise: nil)
            }
            done.assumeIsolated().whenComplete { _ in
                cutoff.cancel()
                context.close(promise: nil)
            }
        }
    }

    /// Answers with `future`'s response on this connection's loop (503 when it fails: a broker or registry
    /// that did not answer, which another try may find back).
    func answerLater(context: ChannelHandlerContext, head: HTTPRequestHead, _ future: EventLoopFuture<HTTPResponse>) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        future.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success(let response): handler.respond(context: context, head: head, response)
            case .failure: handler.respond(context: context, head: head, .error(.serviceUnavailable, "temporarily unavailable, try again"))
            }
        }
    }

    /// Writes the head of an SSE stream: the connection is the stream's from now on, and nothing
    /// more on it is read as a request (or timed out by this handler).
    func beginStream(context: ChannelHandlerContext, head: HTTPResponseHead) {
        self.state = .streaming
        self.armDeadline(context: context)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
    }

    /// A 401 answer for a token that does not verify; nil when there is no token or it is good.
    func tokenRefusal(_ token: String?) -> HTTPResponse? {
        guard let token else { return nil }
        guard self.node.enforcesPermissions else { return .error(.unauthorized, "tokens are not accepted by this server") }
        switch self.node.tokens.verifyConnectionToken(token) {
        case .success: return nil
        case .failure(let failure):
            self.node.metrics.auth.count(failure == .expired ? .tokenExpired : .tokenInvalid)
            // An expired token is 109, as on a WebSocket `connect`: a client that can get a new
            // token comes back with it, one that cannot stops (3503), neither takes it for a bad one.
            return failure == .expired ? .error(.unauthorized, "token expired", code: .tokenExpired) : .error(.unauthorized, "invalid token")
        }
    }

    /// Runs a short-lived session (a poll or an `/rpc` call) whose objects become the answer to
    /// `head`; `start` starts it. A poll's `pollKey` is released when it ends, however it ends.
    func collect(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        purpose: CollectOutput.Purpose,
        timeout: TimeAmount,
        pollKey: PollKey?,
        presence: CollectOutput.PollPresence? = nil,
        _ start: (ClientSession) -> Void
    ) {
        let collector = CollectOutput(purpose: purpose, maximumBytes: self.node.configuration.outboundLimit) { [unowned self] array in
            guard case .collecting(let head, let collecting) = self.state else { return }
            self.endCollecting(collecting)
            self.state = .answering(head)
            // Closed for its command rate (3507, the answer's last object): so is the connection.
            let closedForRate = (collecting.session.output as? CollectOutput)?.endCode?.rawValue == DisconnectCode.tooManyRequests.rawValue
            self.respond(context: context, head: head, .json(.ok, array), close: closedForRate)
        }
        collector.pollPresence = presence
        let session = ClientSession(node: self.node, fanout: self.node.fanout(for: context.eventLoop), output: collector)
        session.budgetKey = self.node.budgetKey(forAddress: self.clientAddress)
        if purpose == .rpc, !self.sharedByClients { session.commandLimiter = self.commandLimiter }
        let scheduledTimeout = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak session] () -> Void in
            session?.collectTimedOut()
        }
        self.state = .collecting(head, Collecting(session: session, timeout: scheduledTimeout, pollKey: pollKey))
        start(session)
    }

    /// Releases what a collecting session holds: its timeout and its poll count.
    private func endCollecting(_ collecting: Collecting) {
        collecting.timeout.cancel()
        if collecting.session.output.transport == .rpc, !self.sharedByClients { self.commandLimiter = collecting.session.commandLimiter }
        if let pollKey = collecting.pollKey { self.node.endPoll(client: pollKey.client, address: pollKey.address) }
    }

    /// Ends the current poll or `/rpc` session without an answer (the connection is going).
    private func abandonCollecting() {
        guard case .collecting(_, let collecting) = self.state else { return }
        self.state = .closing
        self.endCollecting(collecting)
        collecting.session.abandon()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.abandonCollecting()
        context.fireChannelInactive()
    }

    /// A request the HTTP decoder could not read (NIO's error handler has answered 400): the
    /// byte stream has no request boundaries any more, so the connection ends.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A refused WebSocket upgrade is reported here before its request arrives as plain HTTP
        // (which answers it): not a reason to close.
        if error is WebSocketUpgrader.UpgradeError { return }
        self.abandonCollecting()
        context.close(promise: nil)
    }

    /// `GET /stats`: nodes and connections in the cluster, from the registry (read at most once a second).
    private func stats(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let nodeID = self.node.nodeID
        let answer = self.node.recentNodes().map { nodes -> HTTPResponse in
            var body = ByteBuffer()
            body.writeJSONObject { stats in
                stats.field("node", string: nodeID)
                stats.field("nodes", int: nodes.count)
                stats.field("connections", int: nodes.reduce(0) { $0 + $1.connections })
            }
            return .json(.ok, body)
        }
        self.answerLater(context: context, head: head, answer)
    }
}

@available(*, unavailable)
extension HTTPHandler: Sendable {}
