import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A fake node that stalls: it takes the WebSocket handshake and answers `connect` (with `ping`
/// seconds between pings), then sends nothing at all, as a node or a network that hung would.
final class SilentNode: Sendable {
    private let channel: any Channel
    private let accepted = NIOLockedValueBox(0)
    let port: Int

    /// Connections taken so far.
    var connections: Int { self.accepted.withLockedValue { $0 } }

    init(ping: Double) async throws {
        let accepted = self.accepted
        self.channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                let number = accepted.withLockedValue {
                    $0 += 1
                    return $0
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(ping: ping, number: number))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.port = self.channel.localAddress!.port!
    }

    func stop() async {
        try? await self.channel.close()
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        private let ping: Double
        private let number: Int
        private var received = ByteBuffer()
        private var upgraded = false
        private var answered = false

        init(ping: Double, number: Int) {
            self.ping = ping
            self.number = number
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = Self.unwrapInboundIn(data)
            self.received.writeBuffer(&bytes)
            if !self.upgraded {
                guard FakeNodeHandshake.answer(&self.received, context: context) else { return }
                self.upgraded = true
            }
            // The first frame is the client's `connect` (id 1): answer it once, then say nothing.
            if self.upgraded, !self.answered, self.received.readableBytes >= 2 {
                self.answered = true
                let reply = #"{"id":1,"result":{"client":"silent-\#(self.number)","node":"silent","ping":\#(self.ping),"pong":true}}"#
                var frame = ByteBuffer()
                frame.writeMultipleIntegers(UInt8(0x81), UInt8(reply.utf8.count))
                frame.writeString(reply)
                context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
            }
            self.received.discardReadBytes()
        }
    }
}
