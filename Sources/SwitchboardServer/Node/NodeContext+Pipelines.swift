import NIOCore
import NIOHTTP1
import SwitchboardCore

// The handlers a node puts on a connection once it knows what the connection is. Written once,
// used by the listener (`SwitchboardNode`: the handshake router and the HTTP upgrader) and by
// the node harness that tests, fuzz targets and benchmarks drive (`NodeHarness`).
extension NodeContext {
    /// A WebSocket connection after its handshake: the frame reader and writer, then the client
    /// session (or the echo handler on `/echo`).
    func addWebSocketHandlers(to channel: any Channel, echo: Bool = false) throws {
        let pipeline = channel.pipeline.syncOperations
        if echo {
            // A peer that sends and never reads: reading stops while its echoes cannot be written, so
            // they cannot pile up (the echo has no session, hence no slow-consumer cut).
            try pipeline.addHandler(BackPressureHandler())
            try pipeline.addHandler(WebSocketFrameHandler(maximumMessageSize: self.configuration.echoMaxMessageSize))
            // Quiet for a ping interval and its pong timeout: gone, as a session would be (pings off:
            // five minutes). Both are at most 1e9 s (the configuration's bound): no overflow here.
            let configuration = self.configuration
            let seconds = configuration.pingInterval > 0 ? configuration.pingInterval + configuration.pongTimeout : 300
            let idle = TimeAmount.milliseconds(Int64(max(seconds, 1) * 1000))
            try pipeline.addHandler(EchoHandler(idleTimeout: idle))
        } else {
            try pipeline.addHandler(WebSocketFrameHandler(maximumMessageSize: self.configuration.maxMessageSize))
            let session = ClientSession(node: self, fanout: self.fanout(for: channel.eventLoop))
            session.budgetKey = self.budgetKey(forAddress: self.clientAddress(of: channel))
            try pipeline.addHandler(session)
        }
    }

    /// The WebSocket upgrade the HTTP pipeline offers (`/ws`, and `/echo` when enabled); it keeps
    /// no per-connection state, so one serves every connection.
    func makeUpgrader() -> WebSocketUpgrader {
        WebSocketUpgrader(
            accepts: { head in
                !self.isDraining && Route(uri: head.uri).acceptsUpgrade(echoEnabled: self.configuration.echoEndpoint)
                    && self.admitsOrigin(head)
            },
            installHandlers: { channel, head in
                try self.addWebSocketHandlers(to: channel, echo: Route(uri: head.uri) == .echo)
            }
        )
    }

    /// The full HTTP/1.1 pipeline (NIO's decoder with tight limits, the upgrader, `HTTPHandler`)
    /// under the connection's head deadline.
    func addHTTPHandlers(to channel: any Channel, upgrader: WebSocketUpgrader, headDeadline: NIODeadline) throws {
        // Behind a trusted proxy the client's address is the one the proxy named.
        let clientAddress = self.clientAddress(of: channel)
        let httpHandler = HTTPHandler(
            node: self, clientAddress: clientAddress, headDeadline: headDeadline,
            sharedByClients: channel.remoteAddress?.ipText.map { self.trustedProxies.contains($0) } ?? false)
        let boundHTTPHandler = NIOLoopBound(httpHandler, eventLoop: channel.eventLoop)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 8192
        limits.maxHeaderListSize = 16384
        limits.maxHeaderFieldCount = 100
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withPipeliningAssistance: true,
            withServerUpgrade: (
                upgraders: [upgrader],
                completionHandler: { ctx in
                    ctx.pipeline.syncOperations.removeHandler(boundHTTPHandler.value, promise: nil)
                }
            ),
            withErrorHandling: true,
            withOutboundHeaderValidation: true,
            withEncoderConfiguration: .init(),
            withDecoderLimitConfiguration: limits
        )
        try channel.pipeline.syncOperations.addHandler(httpHandler)
    }
}
