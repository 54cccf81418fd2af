import NIOCore
import NIOHTTP1
import SwitchboardBroker
import SwitchboardCore
import SwitchboardAuth

/// The SSE and long-polling transports and the demo's `/stats` (docs/transports.md).
extension HTTPHandler {
    /// Longest a poll may wait, and the default.
    static let maximumPollTimeout: Double = 60
    static let defaultPollTimeout: Double = 25
    /// An `/rpc` call that has not got all its replies by then is answered with what it has.
    static let rpcTimeout: TimeAmount = .seconds(30)

    private static let requestParser = JSONParser(maximumDepth: 16, maximumValues: 20_000)

    // MARK: SSE

    /// `GET /sse?connect=` (anonymous only) or `POST /sse` with the connect params as the body:
    /// the stream. The connection becomes the session's; the HTTP handler steps aside.
    func openEventStream(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer?) {
        if self.node.isDraining {
            var response = HTTPResponse.text(.serviceUnavailable, "draining: reconnect to another node")
            response.headers.append(("Retry-After", "1"))
            return self.respond(context: context, head: head, response, close: true)
        }
        guard head.version.major == 1, head.version.minor >= 1 else {
            return self.respond(context: context, head: head, Self.error(.httpVersionNotSupported, "SSE needs HTTP/1.1"), close: true)
        }
        let lastEventID = head.headers.first(name: "last-event-id")
        let opening: Result<EventStreamOpening, EventStreamOpening.Refusal>
        if let body {
            opening = EventStreamOpening.body(body, lastEventID: lastEventID, bearer: Self.bearerToken(head))
        } else {
            opening = EventStreamOpening.query(connect: HTTPQuery(uri: head.uri)["connect"], lastEventID: lastEventID)
        }
        let params: ConnectParams
        switch opening {
        case .success(let opened):
            params = opened.params
        case .failure(let refusal):
            return self.respond(context: context, head: head, Self.error(HTTPResponseStatus(statusCode: refusal.status), refusal.message))
        }
        self.streaming = true
        self.markResponded()
        let pipeline = context.pipeline.syncOperations
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "Cache-Control", value: "no-store")
        // nginx would otherwise hold events back in its buffer.
        headers.add(name: "X-Accel-Buffering", value: "no")
        // Another admitted origin's page reads the stream with fetch (or EventSource): it needs CORS.
        for (name, value) in self.node.corsHeaders(head) { headers.add(name: name, value: value) }
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
        let session = ClientSession(node: self.node, fanout: self.node.fanout(for: context.eventLoop), output: EventStreamOutput())
        do {
            try pipeline.addHandler(session, position: .after(self))
        } catch {
            context.close(promise: nil)
            return
        }
        session.start(params)
        context.flush()
    }

    /// `POST /sse?session=`: commands for a stream, held here or on another node.
    func postSessionCommands(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        guard let text = HTTPQuery(uri: head.uri)["session"], !text.isEmpty else {
            return self.respond(context: context, head: head, Self.error(.badRequest, "session is missing"))
        }
        guard let id = EventStreamSessionID(Substring(text)) else {
            return self.respond(context: context, head: head, Self.error(.badRequest, "malformed session id"))
        }
        guard body.readableBytes <= self.node.configuration.maxMessageSize else {
            return self.respond(context: context, head: head, Self.error(.payloadTooLarge, "body larger than \(self.node.configuration.maxMessageSize) bytes"))
        }
        guard body.withUnsafeReadableBytes({ UTF8Validation.isValid($0) }) else {
            return self.respond(context: context, head: head, Self.error(.badRequest, "body is not UTF-8"))
        }
        let outcome: EventLoopFuture<SessionCommandOutcome>
        if id.node == self.node.nodeID {
            guard id.loop < self.node.fanouts.count else {
                return self.respond(context: context, head: head, Self.error(.notFound, "unknown session"))
            }
            let fanout = self.node.fanouts[id.loop]
            outcome = fanout.eventLoop.submit { fanout.sessionCommands(client: id.client, secret: id.secret, body: body) }
        } else {
            // A node that left the registry holds no sessions: say so at once rather than after the timeout.
            let hub = self.node.hub
            let from = self.node.nodeID
            let commands = String(buffer: body)
            outcome = self.node.broker.nodes().flatMap { nodes in
                guard nodes.contains(where: { $0.id == id.node }) else {
                    return hub.eventLoop.makeSucceededFuture(.rejected(status: 404, message: "unknown session (its node is gone)"))
                }
                return hub.forwardSessionCommands(session: text, commands: commands, to: id.node, from: from)
            }
        }
        self.answerLater(context: context, head: head, outcome.map { outcome in
            switch outcome {
            case .accepted(let count):
                var body = ByteBuffer()
                body.writeJSONObject { $0.field("accepted", int: count) }
                return .json(.accepted, body)
            case .rejected(let status, let message):
                return Self.error(HTTPResponseStatus(statusCode: status), message)
            }
        })
    }

    // MARK: Long-polling

    /// `POST /poll`: what the given channels have after the given positions, now or when it comes.
    func poll(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        if self.node.isDraining {
            var response = Self.error(.serviceUnavailable, "draining: poll another node")
            response.headers.append(("Retry-After", "1"))
            return self.respond(context: context, head: head, response)
        }
        guard body.readableBytes <= self.node.configuration.maxMessageSize else {
            return self.respond(context: context, head: head, Self.error(.payloadTooLarge, "body larger than \(self.node.configuration.maxMessageSize) bytes"))
        }
        guard body.withUnsafeReadableBytes({ UTF8Validation.isValid($0) }) else {
            return self.respond(context: context, head: head, Self.error(.badRequest, "body is not UTF-8"))
        }
        var params = ConnectParams()
        var timeout = Self.defaultPollTimeout
        var client = ""
        do throws(SwitchboardError) {
            guard case .object(let object) = try? Self.requestParser.parse(body.readableBytesView) else {
                throw SwitchboardError.badRequest("the body must be a JSON object")
            }
            if let subs = object["subs"] {
                guard subs.objectValue.map({ $0.members.count <= self.node.configuration.maxSubscriptions }) ?? true else {
                    throw SwitchboardError.badRequest("at most \(self.node.configuration.maxSubscriptions) channels per poll")
                }
                params.subs = try ConnectParams.parseSubs(subs)
            }
            for sub in params.subs { try ChannelName.validate(sub.channel) }
            if let value = object["timeout"], value != .null {
                guard let seconds = value.doubleValue, seconds >= 0, seconds <= Self.maximumPollTimeout else {
                    throw SwitchboardError.badRequest("timeout must be a number of seconds from 0 to \(Int(Self.maximumPollTimeout))")
                }
                timeout = seconds
            }
            client = try ClientMessage.optionalString(object, "client") ?? ""
            guard client.utf8.count <= 64 else { throw SwitchboardError.badRequest("client must be at most 64 bytes") }
            params.token = try ClientMessage.optionalString(object, "token") ?? Self.bearerToken(head)
        } catch {
            return self.respond(context: context, head: head, Self.error(.badRequest, error.message))
        }
        if let failure = self.checkToken(params.token) {
            return self.respond(context: context, head: head, failure)
        }
        let pollKey = PollKey(client: client, address: self.clientAddress)
        if let refusal = self.node.beginPoll(client: pollKey.client, address: pollKey.address) {
            return self.respond(context: context, head: head, Self.error(.tooManyRequests, refusal))
        }
        self.collect(context: context, head: head, purpose: .poll, timeout: .milliseconds(Int64(timeout * 1000)), pollKey: pollKey) { session in
            session.start(params)
        }
    }

    /// `POST /rpc`: stateless commands (publish, history, presence), answered as one array.
    func rpc(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        guard body.readableBytes <= self.node.configuration.maxMessageSize else {
            return self.respond(context: context, head: head, Self.error(.payloadTooLarge, "body larger than \(self.node.configuration.maxMessageSize) bytes"))
        }
        guard body.withUnsafeReadableBytes({ UTF8Validation.isValid($0) }) else {
            return self.respond(context: context, head: head, Self.error(.badRequest, "body is not UTF-8"))
        }
        let token = Self.bearerToken(head)
        if let failure = self.checkToken(token) {
            return self.respond(context: context, head: head, failure)
        }
        let messages: [ClientMessage]
        switch ClientSession.parseCommands(body, allowConnect: true, maximumCommands: self.node.configuration.maxCommandsPerRequest) {
        case .failure(let error):
            return self.respond(context: context, head: head, Self.error(error.tooMany ? .payloadTooLarge : .badRequest, error.message))
        case .success(let parsed):
            messages = parsed
        }
        self.collect(context: context, head: head, purpose: .rpc, timeout: Self.rpcTimeout, pollKey: nil) { session in
            session.start(ConnectParams(token: token))
            session.run(messages)
        }
    }

    /// Runs a short-lived session whose objects become this request's answer.
    private func collect(
        context: ChannelHandlerContext,
        head: HTTPRequestHead,
        purpose: CollectOutput.Purpose,
        timeout: TimeAmount,
        pollKey: PollKey?,
        _ body: (ClientSession) -> Void
    ) {
        let node = self.node
        let collector = CollectOutput(purpose: purpose, maximumBytes: self.node.configuration.outboundLimit) { [unowned self] array in
            if let pollKey { node.endPoll(client: pollKey.client, address: pollKey.address) }
            self.collectTimeout?.cancel()
            self.collectTimeout = nil
            self.collectingSession = nil
            self.respond(context: context, head: head, .json(.ok, array))
        }
        let session = ClientSession(node: self.node, fanout: self.node.fanout(for: context.eventLoop), output: collector)
        self.collectingSession = session
        self.pollKey = pollKey
        self.collectTimeout = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak session] in
            session?.collectTimedOut()
        }
        body(session)
    }

    /// Ends the current poll or `/rpc` session without an answer (connection gone, or refused).
    func endCollecting() {
        self.collectTimeout?.cancel()
        self.collectTimeout = nil
        if let session = self.collectingSession {
            self.collectingSession = nil
            session.abandon()
            if let pollKey = self.pollKey { self.node.endPoll(client: pollKey.client, address: pollKey.address) }
        }
        self.pollKey = nil
    }

    // MARK: Stats

    /// `GET /stats`: nodes and connections in the cluster, from the registry.
    func stats(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let nodeID = self.node.nodeID
        let answer = self.node.broker.nodes().map { nodes -> HTTPResponse in
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

    // MARK: Helpers

    /// Answers with `future`'s response on this connection's loop (500 when it fails).
    private func answerLater(context: ChannelHandlerContext, head: HTTPRequestHead, _ future: EventLoopFuture<HTTPResponse>) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        future.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success(let response): handler.respond(context: context, head: head, response)
            case .failure: handler.respond(context: context, head: head, Self.error(.internalServerError, "internal error", code: 100))
            }
        }
    }

    /// A 401 answer for a token that does not verify; nil when there is no token or it is good.
    private func checkToken(_ token: String?) -> HTTPResponse? {
        guard let token else { return nil }
        guard self.node.enforcesPermissions else { return Self.error(.unauthorized, "tokens are not accepted by this server", code: 101) }
        switch self.node.tokens.verifyConnectionToken(token) {
        case .success: return nil
        case .failure(let failure):
            self.node.metrics.auth.count(failure == .expired ? .tokenExpired : .tokenInvalid)
            return Self.error(.unauthorized, failure == .expired ? "token expired" : "invalid token", code: 101)
        }
    }

    static func bearerToken(_ head: HTTPRequestHead) -> String? {
        guard let value = head.headers.first(name: "authorization") else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1])
    }

    /// `{"error": {"code", "message"}}` with an HTTP status.
    static func error(_ status: HTTPResponseStatus, _ message: String, code: Int? = nil) -> HTTPResponse {
        let code = code ?? {
            switch status {
            case .payloadTooLarge, .tooManyRequests: return 106
            case .serviceUnavailable, .internalServerError: return 100
            case .unauthorized: return 101
            default: return 107
            }
        }()
        var body = ByteBuffer()
        body.writeJSONObject { answer in
            answer.object("error") { error in
                error.field("code", int: code)
                error.field("message", string: message)
            }
        }
        return .json(status, body)
    }
}
