import NIOCore
import NIOHTTP1
import SwitchboardBroker
import SwitchboardCore

/// `/sse`: the Server-Sent Events transport (docs/transports.md). `GET /sse?connect=` (anonymous
/// only) or `POST /sse` with the connect params as its body opens a stream, and the connection
/// becomes the session's; `POST /sse?session=` carries commands for a stream, held on this node
/// or forwarded to the node that holds it.
struct EventStreamEndpoint {
    let node: NodeContext

    /// Opens a stream on `handler`'s connection; `body` is nil for `GET`.
    func open(on handler: HTTPHandler, context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer?) {
        if let refusal = handler.requestGuard.refusal(.startsSession, body: body) {
            return handler.respond(context: context, head: head, refusal.response, close: refusal.closesConnection)
        }
        guard head.version.major == 1, head.version.minor >= 1 else {
            return handler.respond(context: context, head: head, .error(.httpVersionNotSupported, "SSE needs HTTP/1.1"), close: true)
        }
        let lastEventID = head.headers.first(name: "last-event-id")
        let opening: Result<EventStreamOpening, EventStreamOpening.Refusal>
        if let body {
            opening = EventStreamOpening.body(body, lastEventID: lastEventID, bearer: head.bearerToken)
        } else {
            opening = EventStreamOpening.query(connect: HTTPQuery(uri: head.uri)["connect"], lastEventID: lastEventID)
        }
        let params: ConnectParams
        switch opening {
        case .success(let opened):
            params = opened.params
        case .failure(let refusal):
            return handler.respond(context: context, head: head, .error(HTTPResponseStatus(statusCode: refusal.status), refusal.message))
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "Cache-Control", value: "no-store")
        // nginx would otherwise hold events back in its buffer.
        headers.add(name: "X-Accel-Buffering", value: "no")
        // Another admitted origin's page reads the stream with fetch (or EventSource): it needs CORS.
        for (name, value) in self.node.corsHeaders(head) { headers.add(name: name, value: value) }
        handler.beginStream(context: context, head: HTTPResponseHead(version: head.version, status: .ok, headers: headers))
        let session = ClientSession(node: self.node, fanout: self.node.fanout(for: context.eventLoop), output: EventStreamOutput())
        session.budgetKey = self.node.budgetKey(forAddress: handler.clientAddress)
        do {
            try context.pipeline.syncOperations.addHandler(session, position: .after(handler))
        } catch {
            context.close(promise: nil)
            return
        }
        session.start(params)
        context.flush()
    }

    /// Runs the commands of `body` in the stream named by `?session=` (here or on its node) and
    /// answers 202 with how many were accepted; their replies come on the stream.
    func commands(on handler: HTTPHandler, context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        guard let text = HTTPQuery(uri: head.uri)["session"], !text.isEmpty else {
            return handler.respond(context: context, head: head, .error(.badRequest, "session is missing"))
        }
        guard let id = EventStreamSessionID(Substring(text)) else {
            return handler.respond(context: context, head: head, .error(.badRequest, "malformed session id"))
        }
        if let refusal = handler.requestGuard.refusal(.servesRequest, body: body) {
            return handler.respond(context: context, head: head, refusal.response, close: refusal.closesConnection)
        }
        let outcome: EventLoopFuture<SessionCommandOutcome>
        if id.node == self.node.nodeID {
            guard id.loop < self.node.fanouts.count else {
                return handler.respond(context: context, head: head, .error(.notFound, "unknown session"))
            }
            let fanout = self.node.fanouts[id.loop]
            outcome = fanout.eventLoop.submit { fanout.sessionCommands(client: id.client, secret: id.secret, body: body) }
        } else {
            // A node that left the registry holds no sessions: say so at once rather than after the timeout.
            let hub = self.node.hub
            let from = self.node.nodeID
            let commands = String(buffer: body)
            // The registry as read at most a second ago: a made-up node name costs no Redis read
            // per request (a node started within that second may be taken for gone: 404, and the
            // client opens a new stream).
            outcome = self.node.recentNodes().flatMap { nodes in
                guard nodes.contains(where: { $0.id == id.node }) else {
                    return hub.eventLoop.makeSucceededFuture(.rejected(status: 404, message: "unknown session (its node is gone)"))
                }
                return hub.forwardSessionCommands(session: text, commands: commands, to: id.node, from: from)
            }
        }
        handler.answerLater(context: context, head: head, outcome.map { outcome in
            switch outcome {
            case .accepted(let count):
                var body = ByteBuffer()
                body.writeJSONObject { $0.field("accepted", int: count) }
                return .json(.accepted, body)
            case .rejected(let status, let message):
                return .error(HTTPResponseStatus(statusCode: (100...599).contains(status) ? status : 502), message)
            }
        })
    }
}
