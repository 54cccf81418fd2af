import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchboardBroker

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
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 65_536)))
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
}
