import Logging
import NIOCore
public import NIOEmbedded
import NIOHTTP1
import NIOWebSocket
public import SwitchboardBroker
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

    // MARK: HTTP transports through a whole node

    /// A node on an `EmbeddedEventLoop` whose connections carry the real HTTP/1.1 server pipeline
    /// (NIO's decoder and encoder, `HTTPHandler`, and the `ClientSession`s it starts), on a broker
    /// the caller builds, so a fuzz target can send `/poll`, `/rpc` and SSE requests as bytes.
    public final class HTTPNode {
        /// The loop every connection, the hub and the broker run on.
        public let loop: EmbeddedEventLoop
        /// The broker `init` was given (the fuzz target publishes through it directly too).
        public let broker: any Broker
        private let hub: Hub
        private let context: NodeContext
        private var channels: [EmbeddedChannel] = []

        /// A node with the default configuration on the broker `makeBroker` builds for the node's loop.
        public init(broker makeBroker: (EmbeddedEventLoop) -> any Broker) {
            let loop = EmbeddedEventLoop()
            let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
            let broker = makeBroker(loop)
            let hub = Hub(eventLoop: loop, broker: broker, presenceTTL: 60, logger: logger)
            let fanout = LoopFanout(eventLoop: loop, index: 0)
            fanout.hub = hub
            self.loop = loop
            self.broker = broker
            self.hub = hub
            self.context = NodeContext(
                configuration: ServerConfiguration(), nodeID: "nfuzz", nodeName: "nfuzz", version: "fuzz",
                hub: hub, broker: broker, fanouts: [fanout], logger: logger)
            _ = hub.start(fanouts: [fanout])
            loop.run()
        }

        /// Opens a connection from 127.0.0.1; returns its index for `send` and `read`.
        public func open() -> Int {
            let channel = EmbeddedChannel(loop: self.loop)
            let handler = HTTPHandler(node: self.context, clientAddress: "127.0.0.1", headDeadline: .now() + .seconds(10))
            do {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                try channel.pipeline.syncOperations.addHandler(handler)
                try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            } catch {
                fatalError("fuzz HTTP pipeline: \(error)")
            }
            self.channels.append(channel)
            return self.channels.count - 1
        }

        /// Request bytes into connection `index`, then everything runnable on the loop.
        public func send(_ index: Int, _ bytes: [UInt8]) {
            do {
                try self.channels[index].writeInbound(ByteBuffer(bytes: bytes))
            } catch {
                // Decoder errors close the connection: an expected outcome.
            }
            self.loop.run()
        }

        /// The bytes connection `index` has written since the last read.
        public func read(_ index: Int) -> [UInt8] {
            var out: [UInt8] = []
            while let buffer = (try? self.channels[index].readOutbound(as: ByteBuffer.self)) ?? nil {
                out.append(contentsOf: buffer.readableBytesView)
            }
            return out
        }

        /// Whether connection `index` is still open.
        public func isActive(_ index: Int) -> Bool { self.channels[index].isActive }

        /// Moves the loop's clock (poll and `/rpc` timeouts, sweeps).
        public func advance(seconds: Int64) {
            self.loop.advanceTime(by: .seconds(seconds))
            self.loop.run()
        }

        /// Closes every connection and stops the node and its broker.
        public func shutdown() {
            for channel in self.channels {
                _ = try? channel.finish(acceptAlreadyClosed: true)
            }
            self.channels = []
            self.loop.run()
            self.hub.stop()
            _ = self.broker.shutdown()
            self.loop.run()
            try? self.loop.syncShutdownGracefully()
        }
    }
}
