public import NIOCore
import NIOConcurrencyHelpers
public import NIOPosix

/// A TCP proxy on a loopback port in front of a server on another, for tests of connections that
/// stay open but go quiet: `freezeConnections(thatSent:)` makes the connections that sent a marker
/// (a command name) stop getting anything from the server, while both sockets stay open and every
/// other connection, and every later one, works as before. That is what a subscriber connection
/// looks like when a middlebox or the server loses it silently.
public final class FreezableTCPProxy: Sendable {
    public let port: Int
    private let listener: any Channel
    private let links: NIOLockedValueBox<[ObjectIdentifier: Link]>

    /// Listens on 127.0.0.1 (a port picked by the system) and connects each client to `targetPort`.
    public init(targetPort: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws {
        let links = NIOLockedValueBox<[ObjectIdentifier: Link]>([:])
        self.links = links
        let target = try SocketAddress(ipAddress: "127.0.0.1", port: targetPort)
        self.listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { client in
                client.eventLoop.makeCompletedFuture {
                    let link = Link(client: client, target: target)
                    links.withLockedValue { $0[ObjectIdentifier(link)] = link }
                    try client.pipeline.syncOperations.addHandler(ClientSide(link: link))
                    client.closeFuture.whenComplete { _ in links.withLockedValue { $0[ObjectIdentifier(link)] = nil } }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        self.port = self.listener.localAddress!.port!
    }

    /// From now on, the open connections whose client has sent `marker` (its bytes, anywhere in what
    /// it sent) get nothing more from the server: its bytes are read and dropped. Returns how many
    /// were frozen.
    public func freezeConnections(thatSent marker: String) async throws -> Int {
        let links = self.links.withLockedValue { Array($0.values) }
        var frozen = 0
        for link in links {
            if try await link.client.eventLoop.submit({ link.freezeIfSent(Array(marker.utf8)) }).get() { frozen += 1 }
        }
        return frozen
    }

    /// Closes the listener and every connection.
    public func stop() async {
        try? await self.listener.close()
        let links = self.links.withLockedValue { Array($0.values) }
        for link in links { link.client.close(promise: nil) }
    }

    /// One proxied connection. Confined to the client channel's event loop (the server side is opened
    /// on the same loop).
    private final class Link: @unchecked Sendable {
        let client: any Channel
        let target: SocketAddress
        var server: (any Channel)?
        /// Everything the client sent so far (bounded: the first 64 KB), for `freezeIfSent`.
        var sent: [UInt8] = []
        var frozen = false
        var waiting: [ByteBuffer] = []

        init(client: any Channel, target: SocketAddress) {
            self.client = client
            self.target = target
        }

        /// Connects to the target once the client's connection is active (not in the child
        /// initializer: the connect could complete before the client channel is active).
        func connect() {
            ClientBootstrap(group: self.client.eventLoop)
                .channelInitializer { server in
                    server.eventLoop.makeCompletedFuture { try server.pipeline.syncOperations.addHandler(ServerSide(link: self)) }
                }
                .connect(to: self.target)
                .whenComplete { result in self.serverConnected(result) }
        }

        func serverConnected(_ result: Result<any Channel, any Error>) {
            switch result {
            case .success(let server):
                self.server = server
                for bytes in self.waiting { server.write(bytes, promise: nil) }
                self.waiting = []
                server.flush()
                self.client.read()
                if !self.client.isActive { server.close(promise: nil) }
            case .failure:
                self.client.close(promise: nil)
            }
        }

        func fromClient(_ bytes: ByteBuffer) {
            if self.sent.count < 65_536 { self.sent += bytes.readableBytesView.prefix(65_536 - self.sent.count) }
            if let server = self.server {
                server.writeAndFlush(bytes, promise: nil)
            } else {
                self.waiting.append(bytes)
            }
        }

        func freezeIfSent(_ marker: [UInt8]) -> Bool {
            guard !marker.isEmpty, self.sent.count >= marker.count else { return false }
            for start in 0...(self.sent.count - marker.count) where self.sent[start..<(start + marker.count)].elementsEqual(marker) {
                self.frozen = true
                return true
            }
            return false
        }
    }

    private final class ClientSide: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let link: Link

        init(link: Link) { self.link = link }

        func channelActive(context: ChannelHandlerContext) {
            self.link.connect()
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.link.fromClient(Self.unwrapInboundIn(data))
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            if self.link.server != nil { context.read() }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.link.server?.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    private final class ServerSide: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let link: Link

        init(link: Link) { self.link = link }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !self.link.frozen else { return }
            self.link.client.writeAndFlush(Self.unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.link.client.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
