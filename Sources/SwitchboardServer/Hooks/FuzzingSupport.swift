import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchboardBroker
public import SwitchboardCore

/// Entry points for the fuzz targets in `Fuzz/` (not API).
@_spi(Fuzzing)
public enum FuzzingSupport {
    /// Feeds bytes that follow a WebSocket handshake through a fresh node's real
    /// frame decoder, frame handler and client session, then tears everything down.
    public static func feedWebSocketSession(_ bytes: [UInt8]) {
        let loop = EmbeddedEventLoop()
        let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
        let broker = MemoryBroker(eventLoop: loop)
        let hub = Hub(eventLoop: loop, broker: broker, presenceTTL: 60, logger: logger)
        let fanout = LoopFanout(eventLoop: loop, index: 0)
        fanout.hub = hub
        let context = NodeContext(
            configuration: ServerConfiguration(), nodeID: "nfuzz", nodeName: "nfuzz", version: "fuzz",
            hub: hub, broker: broker, fanouts: [fanout], logger: logger)
        _ = hub.start(fanouts: [fanout])
        loop.run()
        let channel = EmbeddedChannel(loop: loop)
        do {
            try channel.pipeline.syncOperations.addHandler(WebSocketFrameHandler(maximumMessageSize: 65_536))
            try channel.pipeline.syncOperations.addHandler(ClientSession(node: context, fanout: fanout))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        } catch {
            // Decoder errors are an expected outcome.
        }
        loop.run()
        while (try? channel.readOutbound(as: ByteBuffer.self)) ?? nil != nil {}
        _ = try? channel.finish(acceptAlreadyClosed: true)
        hub.stop()
        _ = broker.shutdown()
        loop.run()
        try? loop.syncShutdownGracefully()
    }

    // MARK: HTTP transport inputs (thin wrappers over internal parsers)

    /// `EventStreamSessionID(_:)`: the parts of an SSE session id, nil when it is malformed.
    public static func parseSessionID(_ text: Substring) -> (client: String, secret: String, node: String, loop: Int)? {
        EventStreamSessionID(text).map { ($0.client, $0.secret, $0.node, $0.loop) }
    }

    /// `HTTPQuery(uri:)`: the decoded query of a request target.
    public static func parseQuery(uri: String) -> [String: String] {
        HTTPQuery(uri: uri).values
    }

    /// `HTTPQuery.decode(_:)`: one percent-decoded query component, nil when malformed.
    public static func decodeQueryComponent(_ text: Substring) -> String? {
        HTTPQuery.decode(text)
    }

    /// `ClientSession.parseCommands(_:allowConnect:)`: the commands of an HTTP body, nil when it is refused.
    public static func parseCommands(_ body: [UInt8], allowConnect: Bool) -> [ClientMessage]? {
        try? ClientSession.parseCommands(ByteBuffer(bytes: body), allowConnect: allowConnect, maximumCommands: 100).get()
    }
}
