import Logging
public import NIOCore
import NIOWebSocket
import SwitchboardBroker
public import SwitchboardCore

// The hot path, reachable from the allocation benchmarks in `Benchmarks/` and from nowhere
// else: `@_spi(Benchmarks) import SwitchboardServer`. Each entry point runs the same code the
// server runs (the hub's encoding, `LoopFanout.apply`, `ClientSession`'s command decoding), so a
// change there shows up in the benchmarks' malloc counts.
//
// NIOEmbedded is not a dependency of this module: the benchmarks make the event loop and the
// channels (`EmbeddedEventLoop`, `EmbeddedChannel`) and hand them in.

/// Single steps of the hot path, for benchmarks.
@_spi(Benchmarks)
public enum HotPathBenchmarkSupport {
    /// The parser `ClientSession` reads client messages with (`publish.data` kept raw).
    private static let parser = ClientSession.parser

    /// A publication as a node receives it from the broker: `payloadSize` bytes of JSON
    /// (a string), the publisher's client info, and a publish time.
    public static func samplePublication(payloadSize: Int, offset: UInt64 = 1) -> Publication {
        var data = ByteBuffer()
        data.writeJSONString(String(repeating: "x", count: max(0, payloadSize - 2)))
        return Publication(
            offset: offset,
            data: data,
            info: ClientInfo(client: "n1-0-1", user: ""),
            time: UInt64(max(0, NIODeadline.wallClockNanoseconds))
        )
    }

    /// Encodes one publication into the frame every subscriber is sent, exactly as the hub
    /// does once per publication per node (`Hub.handlePublication`).
    public static func encodePublicationFrame(channel: String, _ publication: Publication, allocator: ByteBufferAllocator) -> ByteBuffer {
        Self.encodePublication(channel: channel, publication, allocator: allocator).webSocketFrame
    }

    static func encodePublication(channel: String, _ publication: Publication, allocator: ByteBufferAllocator) -> OutboundMessage {
        OutboundMessage(allocator: allocator, capacity: publication.data.readableBytes + 96) {
            $0.writePublicationPush(channel: channel, publication)
        }
    }

    /// The text of a client `publish` command with a `payloadSize`-byte JSON string as data.
    public static func publishCommand(id: UInt32 = 7, channel: String, payloadSize: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeStaticString("{\"id\":")
        buffer.writeDecimal(id)
        buffer.writeStaticString(",\"publish\":{\"channel\":")
        buffer.writeJSONString(channel)
        buffer.writeStaticString(",\"data\":")
        buffer.writeJSONString(String(repeating: "x", count: max(0, payloadSize - 2)))
        buffer.writeStaticString("}}")
        return buffer
    }

    /// A masked client text frame carrying `payload` (the mask key is zero, so the bytes stay readable).
    public static func maskedTextFrame(_ payload: ByteBuffer) -> ByteBuffer {
        var payload = payload
        var frame = ByteBuffer()
        frame.writeInteger(UInt8(0x81))
        let length = payload.readableBytes
        if length < 126 {
            frame.writeInteger(UInt8(0x80) | UInt8(length))
        } else if length <= Int(UInt16.max) {
            frame.writeInteger(UInt8(0x80 | 126))
            frame.writeInteger(UInt16(length))
        } else {
            frame.writeInteger(UInt8(0x80 | 127))
            frame.writeInteger(UInt64(length))
        }
        frame.writeInteger(UInt32(0))
        frame.writeBuffer(&payload)
        return frame
    }

    /// Decodes a client message payload (one or more commands, newline separated) the way
    /// `ClientSession.channelRead` does; returns the last command.
    @discardableResult
    public static func decodeCommand(_ payload: ByteBuffer) throws -> ClientMessage? {
        let values = try payload.withUnsafeReadableBytes { bytes throws(JSONParser.Error) in
            try Self.parser.parseSequence(
                UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count))
        }
        var last: ClientMessage?
        for value in values {
            last = try ClientMessage.parse(value)
        }
        return last
    }
}

/// One event loop's node parts (hub, `LoopFanout`, memory broker) with `subscribers` client
/// sessions, each on its own channel behind the server's WebSocket handlers and subscribed to
/// one channel, for measuring the fan-out of one publication.
///
/// Every session's writes end in a handler at the front of its pipeline that counts and
/// discards them, so what is measured is the server's own work per delivery, not a transport.
///
/// Not thread-safe: use it on the thread that runs `eventLoop` (an `EmbeddedEventLoop`).
@_spi(Benchmarks)
public final class FanoutBench {
    /// Where a publication enters.
    public enum Path: Sendable {
        /// An encoded frame handed to the loop (`LoopFanout.apply` with one `.publication` op): the
        /// per-subscriber part alone.
        case loop
        /// A broker event at the hub (`Hub` orders it, encodes it once and batches it for the
        /// loop), then the loop's part: everything between the broker and the socket.
        case hub
    }

    /// Sessions subscribed to `channel`.
    public let subscribers: Int
    /// The channel they subscribe to (default namespace: history on, so publications carry offsets).
    public let channel: String
    public let path: Path

    private let runLoop: () -> Void
    private let node: NodeContext
    private let fanout: LoopFanout
    private let sinks: [DiscardingOutboundSink]
    private let channels: [any Channel]
    private let allocator = ByteBufferAllocator()
    private let epoch: String
    private var publication: Publication
    private var message: OutboundMessage
    private var ops: [FanoutOp] = []

    /// Sets up the node, subscribes `subscribers` sessions and checks that one publication
    /// reaches every one of them.
    ///
    /// - Parameters:
    ///   - eventLoop: a loop run by `runLoop` on the calling thread (an `EmbeddedEventLoop`).
    ///   - makeChannel: a new, active channel on `eventLoop` (a connected `EmbeddedChannel`).
    ///   - runLoop: runs everything queued on `eventLoop` (`EmbeddedEventLoop.run`).
    ///   - recordLatency: give the fan-out the node's metrics, as a running node has, so each
    ///     publication also records its publish-to-deliver time.
    public init(
        subscribers: Int,
        path: Path,
        payloadSize: Int = 100,
        channel: String = "bench",
        recordLatency: Bool = true,
        eventLoop: any EventLoop,
        makeChannel: () throws -> any Channel,
        runLoop: @escaping () -> Void
    ) throws {
        self.subscribers = subscribers
        self.channel = channel
        self.path = path
        self.runLoop = runLoop
        let logger = Logger(label: "switchboard.benchmark", factory: { _ in SwiftLogNoOpLogHandler() })
        let broker = MemoryBroker(eventLoop: eventLoop)
        let hub = Hub(eventLoop: eventLoop, broker: broker, presenceTTL: 60, logger: logger)
        let fanout = LoopFanout(eventLoop: eventLoop, index: 0)
        fanout.hub = hub
        let metrics = NodeMetrics()
        if recordLatency { fanout.metrics = metrics }
        var configuration = ServerConfiguration()
        configuration.pingInterval = 0
        // Join/leave and presence would publish an event per subscribe; keep the setup quiet.
        configuration.namespaces.defaults.joinLeave = false
        configuration.namespaces.defaults.presence = false
        self.node = NodeContext(
            configuration: configuration, nodeID: "nbench", nodeName: "nbench", version: "bench",
            hub: hub, broker: broker, fanouts: [fanout], metrics: metrics, logger: logger)
        self.fanout = fanout
        let started = hub.start(fanouts: [fanout])
        runLoop()
        var startError: (any Error)?
        started.assumeIsolated().whenFailure { startError = $0 }
        if let startError { throw startError }

        var sinks: [DiscardingOutboundSink] = []
        var channels: [any Channel] = []
        let connect = HotPathBenchmarkSupport.maskedTextFrame(ByteBuffer(string: #"{"id":1,"connect":{}}"#))
        let subscribe = HotPathBenchmarkSupport.maskedTextFrame(
            ByteBuffer(string: #"{"id":2,"subscribe":{"channel":"\#(channel)"}}"#))
        for _ in 0..<subscribers {
            let connection = try makeChannel()
            let sink = DiscardingOutboundSink()
            let pipeline = connection.pipeline.syncOperations
            try pipeline.addHandler(sink, position: .first)
            try pipeline.addHandler(WebSocketFrameHandler(maximumMessageSize: configuration.maxMessageSize))
            try pipeline.addHandler(ClientSession(node: self.node, fanout: fanout))
            for command in [connect, subscribe] {
                pipeline.fireChannelRead(NIOAny(command))
                pipeline.fireChannelReadComplete()
            }
            sinks.append(sink)
            channels.append(connection)
        }
        runLoop()
        self.sinks = sinks
        self.channels = channels

        var epoch: String?
        broker.history(HistoryQuery(channel: channel, limit: 0)).assumeIsolated().whenSuccess { epoch = $0.position.epoch }
        runLoop()
        guard let epoch else { throw SwitchboardError(.internalError, "no history position for \(channel)") }
        self.epoch = epoch
        // The first publication of a fresh channel: offset 1 follows the position (0) every subscriber joined at.
        self.publication = HotPathBenchmarkSupport.samplePublication(payloadSize: payloadSize, offset: 1)
        self.message = HotPathBenchmarkSupport.encodePublication(channel: channel, self.publication, allocator: self.allocator)
        self.publication.offset = 0
        self.ops.reserveCapacity(1)

        // Every session must take the publication as a live subscriber, or the benchmark would
        // measure nothing (or an unsubscribe push): count the bytes of exactly one frame each.
        let (writes, bytes, flushes) = (self.writes, self.bytesWritten, self.flushes)
        self.deliverOne()
        let expected = HotPathBenchmarkSupport.encodePublicationFrame(channel: channel, self.publication, allocator: self.allocator)
        let frameBytes = path == .hub ? expected.readableBytes : self.message.webSocketFrame.readableBytes
        guard self.writes - writes == subscribers, self.bytesWritten - bytes == subscribers * frameBytes,
            self.flushes - flushes == subscribers
        else {
            throw SwitchboardError(
                .internalError,
                "one publication gave \(self.writes - writes) writes, \(self.bytesWritten - bytes) bytes and "
                    + "\(self.flushes - flushes) flushes for \(subscribers) subscribers of \(frameBytes)-byte frames")
        }
    }

    /// Delivers the next publication of the channel to every subscriber, by `path`.
    public func deliverOne() {
        self.publication.offset += 1
        switch self.path {
        case .loop:
            self.ops.append(.publication(channel: self.channel, offset: self.publication.offset, time: self.publication.time, self.message))
            self.fanout.apply(self.ops)
            self.ops.removeAll(keepingCapacity: true)
        case .hub:
            self.node.hub.deliverForTesting(.publication(channel: self.channel, self.publication, epoch: self.epoch))
            self.runLoop()
        }
    }

    /// Frames written to all subscribers so far (replies included).
    public var writes: Int { self.sinks.reduce(0) { $0 + $1.writes } }
    /// Bytes written to all subscribers so far.
    public var bytesWritten: Int { self.sinks.reduce(0) { $0 + $1.bytes } }
    /// Flushes that reached the transport, over all subscribers.
    public var flushes: Int { self.sinks.reduce(0) { $0 + $1.flushes } }

    /// Closes every session's channel.
    public func close() {
        for channel in self.channels { channel.close(promise: nil) }
        self.runLoop()
    }
}

@available(*, unavailable)
extension FanoutBench: Sendable {}

/// The transport end of a benchmark session's pipeline: counts what is written, then drops it.
final class DiscardingOutboundSink: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer

    private(set) var writes = 0
    private(set) var bytes = 0
    private(set) var flushes = 0

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = Self.unwrapOutboundIn(data)
        self.writes += 1
        self.bytes += buffer.readableBytes
        promise?.succeed()
    }

    func flush(context: ChannelHandlerContext) {
        self.flushes += 1
    }
}

@available(*, unavailable)
extension DiscardingOutboundSink: Sendable {}

/// A client channel's inbound side, as far as the session: NIO's frame decoder, the server's
/// WebSocket frame handler, then the command decoding of `ClientSession`, for measuring the
/// decoding of one command frame.
///
/// Not thread-safe: use it on the thread that runs the channel's loop.
@_spi(Benchmarks)
public final class CommandFrameBench {
    private let channel: any Channel
    private let sink: DecodingInboundSink

    /// - Parameter channel: an active channel whose loop runs on the calling thread (a connected `EmbeddedChannel`).
    public init(channel: any Channel, maximumMessageSize: Int = 65_536) throws {
        self.channel = channel
        self.sink = DecodingInboundSink()
        let pipeline = channel.pipeline.syncOperations
        try pipeline.addHandler(WebSocketFrameHandler(maximumMessageSize: maximumMessageSize))
        try pipeline.addHandler(self.sink)
    }

    /// Feeds one masked client frame and decodes the command(s) in it.
    public func decode(_ frame: ByteBuffer) {
        let pipeline = self.channel.pipeline.syncOperations
        pipeline.fireChannelRead(NIOAny(frame))
        pipeline.fireChannelReadComplete()
    }

    /// Commands decoded so far.
    public var decoded: Int { self.sink.decoded }
    /// Messages that failed to decode.
    public var failures: Int { self.sink.failures }
}

@available(*, unavailable)
extension CommandFrameBench: Sendable {}

/// Decodes every message it reads as `ClientSession` does, and counts the results.
final class DecodingInboundSink: ChannelInboundHandler {
    typealias InboundIn = WebSocketMessage

    private(set) var decoded = 0
    private(set) var failures = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = Self.unwrapInboundIn(data)
        do {
            if try HotPathBenchmarkSupport.decodeCommand(message.data) != nil { self.decoded += 1 }
        } catch {
            self.failures += 1
        }
    }
}

@available(*, unavailable)
extension DecodingInboundSink: Sendable {}
