import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import SwitchboardCore

/// Where the climb back to WebSocket stands while connected over a fallback transport.
enum ClimbBackProbe {
    case idle
    /// The next probe is due when the timer fires.
    case waiting(Scheduled<Void>)
    /// A probe's TCP connect is under way (bounded by the connect timeout).
    case connecting
    /// The probe's handshake was sent; `deadline` closes it if no answer comes in time (a proxy that
    /// takes the connection and never answers must not stop the probing, nor keep a socket).
    case handshaking(any Channel, deadline: Scheduled<Void>)

    /// Cancels the timer or closes the probe, whichever there is.
    func end() {
        switch self {
        case .idle, .connecting: break
        case .waiting(let timer): timer.cancel()
        case .handshaking(let channel, let deadline):
            deadline.cancel()
            channel.close(promise: nil)
        }
    }
}

/// Opening WebSocket and SSE connections, and the probes that climb back to WebSocket from a fallback.
extension ClientDriver {
    func dialWebSocket(generation: UInt64, sslContext: NIOSSLContext?) {
        let endpoint = self.configuration.endpoint
        let maximumFrameSize = self.configuration.maximumIncomingMessageSize
        let bound = NIOLoopBound(self, eventLoop: self.eventLoop)
        ClientBootstrap(group: self.eventLoop)
            .connectTimeout(self.configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let driver = bound.value
                    try endpoint.addWebSocketHandshake(
                        to: channel, sslContext: sslContext, maximumFrameSize: maximumFrameSize,
                        refused: { reason in driver.connectionClosed(code: nil, reason: reason, generation: generation) },
                        upgraded: { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    NIOWebSocketFrameAggregator(
                                        minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16, maxAccumulatedFrameSize: maximumFrameSize))
                                try channel.pipeline.syncOperations.addHandler(WebSocketConnectionHandler(driver: bound.value, generation: generation))
                            }
                        })
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    guard self.generation == generation, case .connecting = self.machine.state else {
                        channel.close(promise: nil)
                        return
                    }
                    if self.connection == nil { self.connection = WebSocketClientConnection(channel: channel) }
                case .failure(let error):
                    self.connectionClosed(code: nil, reason: "\(error)", generation: generation)
                }
            }
    }

    /// Opens `POST /sse`; `SSEStreamHandler` asks `streamOpening` for the body once connected.
    func dialEventStream(generation: UInt64, sslContext: NIOSSLContext?) {
        let endpoint = self.configuration.endpoint
        let connection = SSEClientConnection(
            endpoint: endpoint, sslContext: sslContext, eventLoop: self.eventLoop, requestTimeout: self.configuration.requestTimeout,
            maximumBodySize: self.configuration.maximumMessageSize)
        let maximumEventSize = self.configuration.maximumIncomingMessageSize
        let bound = NIOLoopBound(self, eventLoop: self.eventLoop)
        let boundConnection = NIOLoopBound(connection, eventLoop: self.eventLoop)
        ClientBootstrap(group: self.eventLoop)
            .connectTimeout(self.configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try endpoint.addTLS(sslContext, to: channel)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        SSEStreamHandler(
                            driver: bound.value, connection: boundConnection.value, generation: generation, maximumEventSize: maximumEventSize))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .assumeIsolated()
            .whenComplete { result in
                if case .failure(let error) = result {
                    self.connectionClosed(code: nil, reason: "\(error)", generation: generation)
                }
            }
    }

    // MARK: climbing back to WebSocket

    /// While connected over a fallback transport, a bare WebSocket handshake every `upgradeInterval`
    /// (±25 %, so that clients that fell back together do not probe together).
    func scheduleClimbBackProbe() {
        self.climbBackProbe.end()
        self.climbBackProbe = .idle
        let interval = self.configuration.upgradeInterval.nanoseconds
        guard interval > 0, self.machine.probesForClimbBack else { return }
        let generation = self.generation
        let delay = TimeAmount.nanoseconds(Int64(Double(interval) * Double.random(in: 0.75..<1.25)))
        self.climbBackProbe = .waiting(
            self.eventLoop.assumeIsolated().scheduleTask(in: delay) {
                self.climbBackProbe = .idle
                guard self.generation == generation, self.machine.probesForClimbBack else { return }
                self.probeWebSocket(generation: generation)
            })
    }

    /// Opens a WebSocket to the endpoint and closes it as soon as the `101` comes; if it came while
    /// the fallback connection is still the one in use, that connection ends and the client
    /// reconnects over WebSocket (its subscriptions resume from their positions).
    func probeWebSocket(generation: UInt64) {
        let endpoint = self.configuration.endpoint
        let sslContext: NIOSSLContext?
        do {
            sslContext = try self.tlsContext()
        } catch {
            return
        }
        let bound = NIOLoopBound(self, eventLoop: self.eventLoop)
        self.climbBackProbe = .connecting
        ClientBootstrap(group: self.eventLoop)
            .connectTimeout(self.configuration.connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try endpoint.addWebSocketHandshake(
                        to: channel, sslContext: sslContext, maximumFrameSize: 1 << 14,
                        refused: { _ in bound.value.probeEnded(opened: false, generation: generation) },
                        upgraded: { channel in
                            bound.value.probeEnded(opened: true, generation: generation)
                            return channel.close()
                        })
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    guard self.generation == generation, self.machine.probesForClimbBack, case .connecting = self.climbBackProbe else {
                        channel.close(promise: nil)
                        return
                    }
                    // Closing it ends the handshake as refused: the next probe is scheduled.
                    let deadline = self.eventLoop.assumeIsolated().scheduleTask(in: self.configuration.connectTimeout) {
                        channel.close(promise: nil)
                    }
                    self.climbBackProbe = .handshaking(channel, deadline: deadline)
                case .failure:
                    self.probeEnded(opened: false, generation: generation)
                }
            }
    }

    /// The probe's handshake ended: opened (`101`) or not.
    func probeEnded(opened: Bool, generation: UInt64) {
        guard self.generation == generation else { return }
        if case .handshaking(_, let deadline) = self.climbBackProbe { deadline.cancel() }
        self.climbBackProbe = .idle
        guard opened else {
            self.scheduleClimbBackProbe()
            return
        }
        guard self.machine.climbBack() else { return }
        self.logger.debug("WebSocket works again; leaving the fallback transport")
        self.connection?.close()
    }

    /// The SSE stream's connection is up: the body of its `POST /sse` is the connect command's
    /// params (with every subscription and its position), and its first event the connect reply,
    /// with id 1. Nil: the attempt is stale.
    func streamOpening(_ connection: SSEClientConnection, generation: UInt64) -> ByteBuffer? {
        guard generation == self.generation, case .connecting = self.machine.state else { return nil }
        self.connection = connection
        self.lastReceived = .now()
        let connect = self.makeConnectCommand()
        var body = ByteBuffer()
        connect.writeConnectParams(into: &body)
        self.inFlight[1] = .connect
        self.nextID = 2
        return body
    }

    /// The attempt's transport opened (the SSE stream's `200`).
    func transportOpened(generation: UInt64) {
        guard generation == self.generation else { return }
        self.machine.opened()
    }
}
