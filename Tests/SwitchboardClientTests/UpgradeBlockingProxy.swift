import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP proxy on a loopback port in front of a node that, while `blocking`, answers `403` to every
/// request for one of `blockedPaths` (by default the WebSocket path, as a corporate proxy that
/// forbids upgrades does) and passes everything else through byte for byte.
final class UpgradeBlockingProxy: Sendable {
    let port: Int
    private let channel: any Channel
    private let state: NIOLockedValueBox<Bool>
    /// While set, a blocked request is held open and never answered (a proxy that stalls) instead of 403.
    private let stalling = NIOLockedValueBox(false)

    var stalls: Bool {
        get { self.stalling.withLockedValue { $0 } }
        set { self.stalling.withLockedValue { $0 = newValue } }
    }
    /// WebSocket requests refused so far.
    private let refusals = NIOLockedValueBox(0)
    /// Every request's path in order of arrival, with " refused" or " passed".
    private let log = NIOLockedValueBox<[String]>([])

    /// The requests up to and including the first one passed through, e.g. `["/ws refused", "/sse passed"]`:
    /// what a client tried before it got through, whatever it tried after.
    var requestsUntilFirstPassed: [String] {
        self.log.withLockedValue { log in
            guard let first = log.firstIndex(where: { $0.hasSuffix(" passed") }) else { return log }
            return Array(log[...first])
        }
    }

    var blocking: Bool {
        get { self.state.withLockedValue { $0 } }
        set { self.state.withLockedValue { $0 = newValue } }
    }

    var refused: Int { self.refusals.withLockedValue { $0 } }

    init(nodePort: Int, blockedPaths: Set<String> = ["/ws"], blocking: Bool = true) async throws {
        let state = NIOLockedValueBox(blocking)
        let refusals = self.refusals
        let log = self.log
        let stalling = self.stalling
        self.state = state
        let node = try SocketAddress(ipAddress: "127.0.0.1", port: nodePort)
        self.channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        Front(node: node, stall: { stalling.withLockedValue { $0 } }, refuse: { line in
                            let target = line.split(separator: " ").dropFirst().first ?? ""
                            let path = String(target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
                            guard blockedPaths.contains(path), state.withLockedValue({ $0 }) else {
                                log.withLockedValue { $0.append("\(path) passed") }
                                return false
                            }
                            refusals.withLockedValue { $0 += 1 }
                            log.withLockedValue { $0.append("\(path) refused") }
                            return true
                        }))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.port = self.channel.localAddress!.port!
    }

    func stop() async {
        try? await self.channel.close()
    }

    /// Reads the request line, then refuses or connects to the node and copies both ways.
    private final class Front: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        private let node: SocketAddress
        private let stall: @Sendable () -> Bool
        private let refuse: @Sendable (String) -> Bool
        private var buffered = ByteBuffer()
        private var partner: (any Channel)?
        private var decided = false

        init(node: SocketAddress, stall: @escaping @Sendable () -> Bool, refuse: @escaping @Sendable (String) -> Bool) {
            self.node = node
            self.stall = stall
            self.refuse = refuse
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = Self.unwrapInboundIn(data)
            if let partner {
                partner.writeAndFlush(bytes, promise: nil)
                return
            }
            self.buffered.writeBuffer(&bytes)
            guard !self.decided else { return }
            guard let end = self.buffered.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return }
            self.decided = true
            let line = String(decoding: self.buffered.readableBytesView[..<end], as: UTF8.self)
            if self.refuse(line) {
                if self.stall() { return }  // held open, never answered
                let answer = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nforbidden\n"
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: answer))).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
                return
            }
            let client = context.channel
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            ClientBootstrap(group: context.eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(Back(client: client))
                    }
                }
                .connect(to: self.node)
                .assumeIsolated()
                .whenComplete { result in
                    switch result {
                    case .success(let channel):
                        let front = bound.value
                        front.partner = channel
                        channel.writeAndFlush(front.buffered, promise: nil)
                        front.buffered = ByteBuffer()
                        if !client.isActive { channel.close(promise: nil) }
                    case .failure:
                        client.close(promise: nil)
                    }
                }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.partner?.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    private final class Back: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer

        private let client: any Channel

        init(client: any Channel) {
            self.client = client
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.client.writeAndFlush(Self.unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.client.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
