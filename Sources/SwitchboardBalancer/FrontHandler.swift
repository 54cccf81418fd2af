import Logging
import NIOCore
import SwitchboardCore
import NIOPosix
import NIOTLS

/// The client side of a connection before it becomes a tunnel: reads and checks the request head within
/// the header deadline, picks a node, connects to it on this channel's own event loop (retrying other
/// nodes on a connect failure), forwards the head and any bytes read after it, puts the client half of a
/// `TunnelHandler` pair behind itself, and leaves the pipeline once the node's first byte passes.
///
/// Until that first byte the node can still be replaced: a node that resets or closes the tunnel
/// without answering (it died after its listener accepted, or is going down) counts as a failed connect,
/// and the head is sent again to another node, within the same `connectAttempts`. Only a request that is
/// safe to send twice is: `GET`, `HEAD` or `OPTIONS` (WebSocket and SSE handshakes, long-polls) with no
/// byte from the client after its head and no half-close. Anything else gets `502` and the node is not
/// blamed: a `POST` may have been acted on, and a client that sent more than a head could have made the
/// node close on purpose (it must not be able to get healthy nodes ejected).
///
/// Answers itself only before any node byte reached the client: 400 for a malformed head, 408 when the
/// head is not complete by the deadline, 503 when no node may take connections (or the balancer is
/// full), 502 when every connect attempt failed or the node ended a request that is not sent twice
/// without answering. Each answer is followed by a write EOF and a short
/// linger that discards input, so the client reads the status rather than a reset.
final class FrontHandler {
    private enum State {
        case readingHead
        case connecting
        /// The tunnel to `node` is open and the node has not answered yet; `clientHalf` is the tunnel's
        /// client half, behind this handler in the pipeline.
        case awaitingResponse(node: BackendNode, clientHalf: TunnelHandler)
        case tunnelling
        case refusing
        case closed
    }

    private let settings: FrontSettings
    /// When the connection was accepted (the handler is added in the child initializer).
    private var acceptedAt = NIODeadline.now()
    private let router: NodeRouter
    private let logger: Logger
    private let refuseOnArrival: Bool
    private let sweepers: TunnelSweepers?
    private var state = State.readingHead
    /// The client's bytes from the first: the head being read, then (while awaiting the node's answer)
    /// the head a retry would send again; nil when there is nothing to retry.
    private var buffer: ByteBuffer?
    private var parser = RequestHeadParser()
    private var head: RequestHead?
    private var deadline: Scheduled<Void>?
    /// The node's first byte is due by then (`--response-timeout`), while awaiting it.
    private var responseDeadline: Scheduled<Void>?
    /// When the client last sent a byte while its request was with the node.
    private var lastClientByte = NIODeadline.uptimeNanoseconds(0)
    private var linger: Scheduled<Void>?
    private var tried: Set<String> = []
    private var attempts = 0
    private var pendingRead = false
    private var clientInputClosed = false

    /// `refuseOnArrival`: the balancer is at `--max-connections`; answer 503 at once.
    /// `sweepers`: the per-loop idle sweepers (nil: tunnels have no idle timeout, for tests).
    init(
        settings: FrontSettings, router: NodeRouter, logger: Logger, refuseOnArrival: Bool = false,
        sweepers: TunnelSweepers? = nil
    ) {
        self.settings = settings
        self.sweepers = sweepers
        self.router = router
        self.logger = logger
        self.refuseOnArrival = refuseOnArrival
    }
}

@available(*, unavailable)
extension FrontHandler: Sendable {}

extension FrontHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func handlerAdded(context: ChannelHandlerContext) {
        self.acceptedAt = .now()
        guard !self.refuseOnArrival else { return }
        self.deadline = context.eventLoop.assumeIsolated().scheduleTask(in: self.settings.headerTimeout) {
            guard case .readingHead = self.state else { return }
            self.router.countRefusal(.headTimeout)
            self.refuse(context: context, status: "408 Request Timeout", body: "request head not complete in time\n")
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadline?.cancel()
        self.deadline = nil
        self.responseDeadline?.cancel()
        self.responseDeadline = nil
        self.linger?.cancel()
        self.linger = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if self.refuseOnArrival {
            self.refuse(context: context, status: "503 Service Unavailable", body: "balancer at its connection limit\n", linger: false)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = self.unwrapInboundIn(data)
        switch self.state {
        case .readingHead:
            if self.buffer == nil {
                self.buffer = bytes
            } else {
                self.buffer!.writeBuffer(&bytes)
            }
            switch self.parser.parse(self.buffer!) {
            case .needMore:
                break
            case .invalid(let error):
                self.router.countRefusal(.badRequest)
                self.logger.debug("bad request head", metadata: ["error": "\(error)"])
                self.refuse(context: context, status: "400 Bad Request", body: "\(error)\n")
            case .complete(let head):
                self.deadline?.cancel()
                self.deadline = nil
                self.head = head
                self.state = .connecting
                self.connectNext(context: context)
            }
        case .connecting:
            // Reads go on while connecting (holding them back costs two `epoll_ctl` calls per
            // connection) until `maximumBufferedWhileConnecting` bytes are held; see `read`.
            self.buffer!.writeBuffer(&bytes)
        case .awaitingResponse:
            self.buffer = nil  // more than a head: not sent again
            self.lastClientByte = .now()  // a body still coming: the node answers after its end
            context.fireChannelRead(data)
        case .tunnelling:
            context.fireChannelRead(data)
        case .refusing, .closed:
            break
        }
    }

    func read(context: ChannelHandlerContext) {
        switch self.state {
        case .connecting where (self.buffer?.readableBytes ?? 0) >= Self.maximumBufferedWhileConnecting:
            self.pendingRead = true
        default:
            context.read()
        }
    }

    /// Most bytes of a client held while its node is being connected (the head included); past it the
    /// client's reads wait for the tunnel, whose water marks bound what follows.
    static let maximumBufferedWhileConnecting = RequestHeadParser.maximumBytes + 16 * 1024

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            self.router.countTLSHandshake()
        }
        if let event = event as? ChannelEvent, case .inputClosed = event {
            switch self.state {
            case .readingHead, .refusing:
                context.close(promise: nil)
            case .connecting:
                self.clientInputClosed = true
            case .awaitingResponse:
                self.clientInputClosed = true
                self.buffer = nil
                context.fireUserInboundEventTriggered(event)
            case .tunnelling, .closed:
                context.fireUserInboundEventTriggered(event)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.state = .closed
        self.deadline?.cancel()
        self.linger?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("client connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
        if case .awaitingResponse = self.state {
            // The node's first byte is on its way to the client: no retry from here on.
            self.responseDeadline?.cancel()
            self.responseDeadline = nil
            self.state = .tunnelling
            self.buffer = nil
            self.head = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let event = event as? TunnelHandler.NodeEndedBeforeResponse else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        guard case .awaitingResponse(let node, let clientHalf) = self.state, context.channel.isActive else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        promise?.succeed()
        self.responseDeadline?.cancel()
        self.responseDeadline = nil
        context.pipeline.syncOperations.removeHandler(clientHalf, promise: nil)
        guard self.buffer != nil else {
            _ = self.router.endedBeforeResponse(node, blame: false)
            self.logger.info(
                "node closed the tunnel before answering a request that is not sent twice",
                metadata: ["node": "\(node.id)", "bytesSent": "\(event.bytesToNode)"])
            self.router.countRefusal(.noResponse)
            self.refuse(context: context, status: "502 Bad Gateway", body: "the node closed the connection without answering\n")
            return
        }
        self.state = .connecting
        let ejection = self.router.endedBeforeResponse(node, blame: true)
        self.logger.info(
            "node closed the tunnel before answering; trying another",
            metadata: [
                "node": "\(node.id)",
                "ejected": "\(ejection.map { "\($0.nanoseconds / 1_000_000_000) s" } ?? "no")",
            ])
        self.connectNext(context: context)
    }

    /// A node that takes the request and never answers must not hold the client (and a slot) until the
    /// idle timeout: `--response-timeout` after the client's last byte (a node answers once the body is
    /// complete), the client gets 504 and the node is blamed.
    private func armResponseDeadline(context: ChannelHandlerContext, nodeChannel: any Channel, in delay: TimeAmount) {
        self.responseDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            guard case .awaitingResponse(let node, let clientHalf) = self.state else { return }
            let quiet = NIODeadline.now() - self.lastClientByte
            guard quiet >= self.settings.responseTimeout else {
                return self.armResponseDeadline(context: context, nodeChannel: nodeChannel, in: self.settings.responseTimeout - quiet)
            }
            context.pipeline.syncOperations.removeHandler(clientHalf, promise: nil)
            nodeChannel.close(promise: nil)
            _ = self.router.endedBeforeResponse(node, blame: true)
            self.router.countRefusal(.noResponse)
            self.logger.info("node did not answer in time", metadata: ["node": "\(node.id)"])
            self.refuse(context: context, status: "504 Gateway Timeout", body: "the node did not answer in time\n")
        }
    }

    /// Whether a request may be sent to a second node after the first one may have seen it.
    static func isReplayable(_ head: RequestHead) -> Bool {
        head.method == "GET" || head.method == "HEAD" || head.method == "OPTIONS"
    }

    // MARK: connecting

    private func connectNext(context: ChannelHandlerContext) {
        guard let head = self.head else { return }
        let key =
            self.settings.picksByKey
            ? head.hashKey(self.settings.hashKey, clientAddress: context.channel.remoteAddress?.ipText) : nil
        guard self.attempts < self.settings.connectAttempts,
            let (node, address) = self.router.pick(key: key, excluding: self.tried)
        else {
            if self.attempts == 0 {
                self.router.countRefusal(.noNode)
                self.refuse(context: context, status: "503 Service Unavailable", body: "no node available\n")
            } else {
                self.router.countRefusal(.connectGaveUp)
                self.refuse(context: context, status: "502 Bad Gateway", body: "no node could be reached\n")
            }
            return
        }
        self.attempts += 1
        self.tried.insert(node.id)
        let link = TunnelLink(
            node: node, router: self.router, acceptedAt: self.acceptedAt, connectStarted: .now(),
            idleTimeout: self.settings.tunnelIdleTimeout, logger: self.logger)
        let pair = TunnelHandler.matchedPair(link: link)
        let nodeHalf = NIOLoopBound(pair.node, eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(self.settings.connectTimeout)
            .channelInitializer { [settings = self.settings] channel in
                channel.eventLoop.makeCompletedFuture {
                    try FrontSettings.applyTunnelOptions(to: channel, settings: settings)
                    try FrontSettings.delayAckOfConnect(on: channel)
                    try channel.pipeline.syncOperations.addHandler(nodeHalf.value)
                }
            }
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .failure(let error) where LocalResourceFailure.isLocal(error):
                    // The balancer's own shortage (no descriptor for the node side): the node is not
                    // blamed, and another node would fail the same way.
                    self.router.connectAbandoned(node)
                    self.logger.warning("no resources to connect to a node", metadata: ["error": "\(error)"])
                    guard case .connecting = self.state else { return }
                    self.router.countRefusal(.localResources)
                    self.refuse(context: context, status: "503 Service Unavailable", body: "balancer out of resources\n")
                case .failure(let error):
                    let ejection = self.router.connectFailed(node)
                    self.logger.info(
                        "connect to node failed",
                        metadata: [
                            "node": "\(node.id)", "error": "\(error)",
                            "ejected": "\(ejection.map { "\($0.nanoseconds / 1_000_000_000) s" } ?? "no")",
                        ])
                    if case .connecting = self.state { self.connectNext(context: context) }
                case .success(let nodeChannel):
                    self.router.connectSucceeded(node)
                    self.connected(context: context, nodeChannel: nodeChannel, clientHalf: pair.client, link: link)
                }
            }
    }

    private func connected(
        context: ChannelHandlerContext, nodeChannel: any Channel, clientHalf: TunnelHandler, link: TunnelLink
    ) {
        guard case .connecting = self.state, let head = self.head, let received = self.buffer else {
            nodeChannel.close(promise: nil)
            return
        }
        self.state = .awaitingResponse(node: link.node, clientHalf: clientHalf)
        self.lastClientByte = .now()
        self.armResponseDeadline(context: context, nodeChannel: nodeChannel, in: self.settings.responseTimeout)
        var rest = received
        rest.moveReaderIndex(forwardBy: head.length)
        var out = nodeChannel.allocator.buffer(capacity: head.length + 128 + rest.readableBytes)
        let proxyProtocol = self.settings.clientAddressForwarding == .proxyProtocol
        if proxyProtocol {
            ProxyProtocolHeader(
                sourceAddress: context.channel.remoteAddress?.ipText, sourcePort: context.channel.remoteAddress?.port ?? 0,
                destinationAddress: context.channel.localAddress?.ipText,
                destinationPort: context.channel.localAddress?.port ?? 0,
                clientUsedTLS: self.settings.forwardedProto == "https"
            ).write(into: &out)
        }
        head.forwardedHead(
            clientAddress: context.channel.remoteAddress?.ipText, proto: self.settings.forwardedProto,
            addForwardedHeaders: !proxyProtocol, into: &out)
        let onlyHead = rest.readableBytes == 0
        out.writeBuffer(&rest)
        self.buffer = onlyHead && !self.clientInputClosed && Self.isReplayable(head) ? received : nil
        link.bytesToNode &+= UInt64(out.readableBytes)
        nodeChannel.writeAndFlush(out, promise: nil)
        if self.clientInputClosed {
            nodeChannel.close(mode: .output, promise: nil)
        }
        do {
            try context.pipeline.syncOperations.addHandler(clientHalf, position: .after(self))
        } catch {
            nodeChannel.close(promise: nil)
            context.close(promise: nil)
            return
        }
        if let sweeper = self.sweepers?.sweeper(for: context.eventLoop) {
            link.startIdleTimer(client: context.channel, sweeper: sweeper)
        }
        if self.pendingRead {
            self.pendingRead = false
            context.channel.read()
        }
    }

    // MARK: refusing

    private func refuse(context: ChannelHandlerContext, status: String, body: String, linger: Bool = true) {
        self.state = .refusing
        self.deadline?.cancel()
        self.deadline = nil
        self.responseDeadline?.cancel()
        self.responseDeadline = nil
        self.buffer = nil
        var out = context.channel.allocator.buffer(capacity: 128 + body.utf8.count)
        out.writeString(
            "HTTP/1.1 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Connection: close\r\n\r\n\(body)")
        let channel = context.channel
        guard linger else {
            context.writeAndFlush(self.wrapOutboundOut(out)).assumeIsolated().whenComplete { _ in
                channel.close(promise: nil)
            }
            // The answer may never leave (a TLS client that sends no ClientHello holds it in NIOSSL, a
            // peer that does not read holds it in the socket): the connection, not counted against
            // `--max-connections`, is closed after the header timeout whatever is unsent.
            self.linger = context.eventLoop.assumeIsolated().scheduleTask(in: self.settings.headerTimeout) {
                channel.close(promise: nil)
            }
            return
        }
        context.writeAndFlush(self.wrapOutboundOut(out)).assumeIsolated().whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
        self.linger = context.eventLoop.assumeIsolated().scheduleTask(in: self.settings.refusalLinger) {
            channel.close(promise: nil)
        }
    }
}
