import NIOCore
import SwitchboardCore

/// The admin listener's connection handler: one request per connection (`Connection: close`), head
/// read with the same strict parser and deadline as client heads. `GET /admin/nodes`, `GET /metrics`,
/// `GET /healthz`, `POST /admin/nodes/{host:port}/drain` and `/ready`, `POST /admin/rebalance`; anything else 404. The admin
/// port has no authentication: bind it to loopback or a private interface.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let router: NodeRouter
    private let headerTimeout: TimeAmount
    /// With a key, `POST /admin/rebalance` also asks the available nodes to rebalance (`/api/rebalance`).
    private let nodeAPIKey: NodeAPIKey?
    /// How long each of those node requests may take.
    private let nodeRequestTimeout: TimeAmount
    /// Shared by the admin listener's connections: one round of node requests at a time.
    private let rebalanceRound: NodeRebalanceRound
    private var buffer: ByteBuffer?
    private var parser = RequestHeadParser()
    private var deadline: Scheduled<Void>?
    private var answered = false

    /// How long `POST /admin/rebalance` makes every non-hash pick go by least connections: a node's
    /// default rebalancing hold and window (10 s + 30 s) and then some.
    static let rebalanceDuration = TimeAmount.seconds(60)

    init(
        router: NodeRouter, headerTimeout: TimeAmount, nodeAPIKey: NodeAPIKey? = nil, nodeRequestTimeout: TimeAmount = .seconds(2),
        rebalanceRound: NodeRebalanceRound
    ) {
        self.router = router
        self.rebalanceRound = rebalanceRound
        self.headerTimeout = headerTimeout
        self.nodeAPIKey = nodeAPIKey
        self.nodeRequestTimeout = nodeRequestTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        self.deadline = context.eventLoop.scheduleTask(in: self.headerTimeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadline?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.answered else { return }
        var bytes = self.unwrapInboundIn(data)
        if self.buffer == nil { self.buffer = bytes } else { self.buffer!.writeBuffer(&bytes) }
        switch self.parser.parse(self.buffer!) {
        case .needMore:
            return
        case .invalid(let error):
            self.respond(context: context, status: "400 Bad Request", type: "text/plain", body: ByteBuffer(string: "\(error)\n"))
        case .complete(let head):
            let snapshot = self.router.snapshot()
            let now = NIODeadline.now()
            switch (head.method, head.path) {
            case ("GET", "/admin/nodes"):
                self.respond(
                    context: context, status: "200 OK", type: "application/json",
                    body: AdminReport.nodesJSON(
                        table: snapshot.table, counters: snapshot.counters, algorithm: snapshot.algorithm, now: now))
            case ("GET", "/metrics"):
                self.respond(
                    context: context, status: "200 OK", type: "text/plain; version=0.0.4",
                    body: AdminReport.metricsText(table: snapshot.table, counters: snapshot.counters, now: now))
            case ("POST", let path) where path.hasPrefix("/admin/nodes/") && (path.hasSuffix("/drain") || path.hasSuffix("/ready")):
                let drain = path.hasSuffix("/drain")
                let id = path.dropFirst("/admin/nodes/".count).dropLast(drain ? "/drain".count : "/ready".count)
                let decoded = RequestHead.percentDecode(id) ?? ""
                if self.router.setDrained(decoded, drain) {
                    var body = ByteBuffer()
                    body.writeJSON(.object(JSONObject([("node", .string(decoded)), ("drained", .bool(drain))])))
                    body.writeStaticString("\n")
                    self.respond(context: context, status: "200 OK", type: "application/json", body: body)
                } else {
                    self.respond(context: context, status: "404 Not Found", type: "text/plain", body: ByteBuffer(string: "no such node\n"))
                }
            case ("POST", "/admin/rebalance"):
                let spread = self.router.startRebalance(for: Self.rebalanceDuration, now: now)
                var answer: [(String, JSONValue)] = [
                    ("rebalancing", .bool(true)),
                    ("seconds", .number(String(Self.rebalanceDuration.nanoseconds / 1_000_000_000))),
                    ("imbalance", .number(String(spread))),
                ]
                guard let key = self.nodeAPIKey else {
                    // Without the nodes' key only the picks change; the nodes rebalance on their own after their hold.
                    answer.append(("nodesAsked", .bool(false)))
                    return self.respond(context: context, status: "200 OK", json: .object(JSONObject(answer)))
                }
                // The deadline guards the head only; the answer waits for the nodes (each bounded by its own).
                // Bytes that come meanwhile are ignored, as after any answer.
                self.answered = true
                self.deadline?.cancel()
                let router = self.router
                let context = NIOLoopBound(context, eventLoop: context.eventLoop)
                self.rebalanceRound.ask(
                    router.availableAddresses(at: now), key: key, timeout: self.nodeRequestTimeout, on: context.value.eventLoop)
                    .assumeIsolated()
                    .whenSuccess { outcomes in
                        answer.append(("nodesAsked", .bool(true)))
                        answer.append(("nodes", .array(outcomes.map { Self.json(node: $0.node, $0.outcome) })))
                        self.respond(context: context.value, status: "200 OK", json: .object(JSONObject(answer)))
                    }
            case ("GET", "/healthz"):
                self.respond(context: context, status: "200 OK", type: "text/plain", body: ByteBuffer(string: "ok\n"))
            default:
                self.respond(context: context, status: "404 Not Found", type: "text/plain", body: ByteBuffer(string: "not found\n"))
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func respond(context: ChannelHandlerContext, status: String, json: JSONValue) {
        var body = ByteBuffer()
        body.writeJSON(json)
        body.writeStaticString("\n")
        self.respond(context: context, status: status, type: "application/json", body: body)
    }

    /// One node's line in the answer of `POST /admin/rebalance`: `{"node", "status"}` or `{"node", "error"}`.
    static func json(node: String, _ outcome: NodeRebalanceRequest.Outcome) -> JSONValue {
        switch outcome {
        case .status(let code): .object(JSONObject([("node", .string(node)), ("status", .number(String(code)))]))
        case .failed(let reason): .object(JSONObject([("node", .string(node)), ("error", .string(reason))]))
        }
    }

    private func respond(context: ChannelHandlerContext, status: String, type: String, body: ByteBuffer) {
        self.answered = true
        self.deadline?.cancel()
        var out = context.channel.allocator.buffer(capacity: 128 + body.readableBytes)
        out.writeString("HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.readableBytes)\r\nConnection: close\r\n\r\n")
        var body = body
        out.writeBuffer(&body)
        let channel = context.channel
        // A peer that never reads the answer (a large /metrics) must not hold the socket: closed after
        // the header timeout whatever is unsent.
        let cutoff = context.eventLoop.scheduleTask(in: self.headerTimeout) { channel.close(promise: nil) }
        context.writeAndFlush(self.wrapOutboundOut(out)).whenComplete { _ in
            cutoff.cancel()
            channel.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension AdminHandler: Sendable {}
