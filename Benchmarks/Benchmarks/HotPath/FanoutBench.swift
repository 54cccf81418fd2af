import NIOCore
import NIOEmbedded
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@_spi(Harness) import SwitchboardServer
@_spi(Harness) import SwitchboardServerTesting

/// An embedded node with `subscribers` client sessions, each on its own channel behind the
/// server's WebSocket handlers and subscribed to one channel, for measuring the fan-out of one
/// publication.
///
/// Every session's writes end in a handler at the front of its pipeline that counts and
/// discards them, so what is measured is the server's own work per delivery, not a transport.
///
/// Not thread-safe: use it on the thread that made it (it runs an `EmbeddedEventLoop`).
final class FanoutBench {
    /// Where a publication enters.
    enum Path: Sendable {
        /// An encoded frame handed to the loop (`LoopFanout.apply` with one `.publication` op): the
        /// per-subscriber part alone.
        case loop
        /// A broker event at the hub (`Hub` orders it, encodes it once and batches it for the
        /// loop), then the loop's part: everything between the broker and the socket.
        case hub
    }

    /// Sessions subscribed to `channel`.
    let subscribers: Int
    /// The channel they subscribe to (default namespace: history on, so publications carry offsets).
    let channel: String
    let path: Path

    private let node: EmbeddedNode<ForwardingBroker>
    private let sinks: [DiscardingOutboundSink]
    private let channels: [EmbeddedChannel]
    private let epoch: String
    private var publication: Publication
    private let encoded: EncodedPublication

    /// Sets up the node, subscribes `subscribers` sessions and checks that one publication
    /// reaches every one of them.
    ///
    /// - Parameter recordLatency: give the fan-out the node's metrics, as a running node has, so
    ///   each publication also records its publish-to-deliver time.
    init(subscribers: Int, path: Path, payloadSize: Int = 100, channel: String = "bench", recordLatency: Bool = true) throws {
        self.subscribers = subscribers
        self.channel = channel
        self.path = path
        var configuration = ServerConfiguration()
        configuration.pingInterval = 0
        // Join/leave and presence would publish an event per subscribe; keep the setup quiet.
        configuration.namespaces.defaults.joinLeave = false
        configuration.namespaces.defaults.presence = false
        let node = try EmbeddedNode(
            configuration: configuration, recordsLatency: recordLatency, makeBroker: { ForwardingBroker(eventLoop: $0) })
        self.node = node

        var sinks: [DiscardingOutboundSink] = []
        var channels: [EmbeddedChannel] = []
        let connect = HotPathInputs.maskedTextFrame(ByteBuffer(string: #"{"id":1,"connect":{}}"#))
        let subscribe = HotPathInputs.maskedTextFrame(ByteBuffer(string: #"{"id":2,"subscribe":{"channel":"\#(channel)"}}"#))
        for _ in 0..<subscribers {
            let sink = DiscardingOutboundSink()
            let connection = try node.openWebSocket(front: sink)
            let pipeline = connection.pipeline.syncOperations
            for command in [connect, subscribe] {
                pipeline.fireChannelRead(NIOAny(command))
                pipeline.fireChannelReadComplete()
            }
            sinks.append(sink)
            channels.append(connection)
        }
        node.loop.run()
        self.sinks = sinks
        self.channels = channels

        var epoch: String?
        node.broker.history(HistoryQuery(channel: channel, limit: 0)).assumeIsolated().whenSuccess { epoch = $0.position.epoch }
        node.loop.run()
        guard let epoch else { throw SwitchboardError(.internalError, "no history position for \(channel)") }
        self.epoch = epoch
        // The first publication of a fresh channel: offset 1 follows the position (0) every subscriber joined at.
        self.publication = HotPathInputs.samplePublication(payloadSize: payloadSize, offset: 1)
        self.encoded = NodeHarness.encode(self.publication, channel: channel, allocator: ByteBufferAllocator())
        self.publication.offset = 0

        // Every session must take the publication as a live subscriber, or the benchmark would
        // measure nothing (or an unsubscribe push): count the bytes of exactly one frame each.
        let (writes, bytes, flushes) = (self.writes, self.bytesWritten, self.flushes)
        self.deliverOne()
        let frameBytes = NodeHarness.encode(self.publication, channel: channel, allocator: ByteBufferAllocator()).webSocketFrame.readableBytes
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
    func deliverOne() {
        self.publication.offset += 1
        switch self.path {
        case .loop:
            self.node.harness.fanOut(self.encoded, channel: self.channel, offset: self.publication.offset, time: self.publication.time)
        case .hub:
            self.node.broker.deliver(.publication(channel: self.channel, self.publication, epoch: self.epoch))
            self.node.loop.run()
        }
    }

    /// Frames written to all subscribers so far (replies included).
    var writes: Int { self.sinks.reduce(0) { $0 + $1.writes } }
    /// Bytes written to all subscribers so far.
    var bytesWritten: Int { self.sinks.reduce(0) { $0 + $1.bytes } }
    /// Flushes that reached the transport, over all subscribers.
    var flushes: Int { self.sinks.reduce(0) { $0 + $1.flushes } }

    /// Closes every session's channel.
    func close() {
        for channel in self.channels { channel.close(promise: nil) }
        self.node.loop.run()
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
