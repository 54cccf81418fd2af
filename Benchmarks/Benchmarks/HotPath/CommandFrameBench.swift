import NIOCore
import NIOEmbedded
@_spi(Harness) import SwitchboardServer

/// A client channel's inbound side, as far as the session: NIO's frame decoder, the server's
/// WebSocket frame handler, then the command decoding of `ClientSession`, for measuring the
/// decoding of one command frame.
///
/// Not thread-safe: use it on the thread that runs the channel's loop.
final class CommandFrameBench {
    private let channel: EmbeddedChannel
    private let sink: DecodingInboundSink

    /// - Parameter channel: an active channel whose loop runs on the calling thread.
    init(channel: EmbeddedChannel, maximumMessageSize: Int = 65_536) throws {
        self.channel = channel
        self.sink = DecodingInboundSink()
        try NodeHarness.addWebSocketFrameHandler(to: channel, maximumMessageSize: maximumMessageSize)
        try channel.pipeline.syncOperations.addHandler(self.sink)
    }

    /// Feeds one masked client frame and decodes the command(s) in it.
    func decode(_ frame: ByteBuffer) {
        let pipeline = self.channel.pipeline.syncOperations
        pipeline.fireChannelRead(NIOAny(frame))
        pipeline.fireChannelReadComplete()
    }

    /// Commands decoded so far.
    var decoded: Int { self.sink.decoded }
    /// Messages that failed to decode.
    var failures: Int { self.sink.failures }
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
            if try HotPathInputs.decodeCommand(message.data) != nil { self.decoded += 1 }
        } catch {
            self.failures += 1
        }
    }
}

@available(*, unavailable)
extension DecodingInboundSink: Sendable {}
