import NIOCore
import NIOHTTP1
import NIOSSL
import NIOWebSocket

/// One open connection of the client, whatever its transport: what the driver sends commands through.
/// Loop-confined (every call on the client's event loop).
protocol ClientConnection: AnyObject {
    var allocator: ByteBufferAllocator { get }
    /// Queues one command (its JSON) to go out on the next `flush`.
    func send(_ command: ByteBuffer)
    func flush()
    /// Ends the connection; the driver hears of it through its transport's handler.
    func close()
    /// The connect reply's `session` (SSE: commands name it; WebSocket: unused).
    func connectReplied(session: String?)
}

/// Commands as masked text frames on the WebSocket.
final class WebSocketClientConnection: ClientConnection {
    let channel: any Channel

    init(channel: any Channel) {
        self.channel = channel
    }

    var allocator: ByteBufferAllocator { self.channel.allocator }

    func send(_ command: ByteBuffer) {
        self.channel.write(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: command), promise: nil)
    }

    func flush() {
        self.channel.flush()
    }

    func close() {
        self.channel.close(promise: nil)
    }

    func connectReplied(session: String?) {}
}

@available(*, unavailable)
extension WebSocketClientConnection: Sendable {}

extension ClientEndpoint {
    /// Puts a TLS client handler first in `channel`'s pipeline when `context` is given, checking the
    /// node's certificate against the endpoint's host name (IP addresses: against the address).
    func addTLS(_ context: NIOSSLContext?, to channel: any Channel) throws {
        guard let context else { return }
        let isAddress = self.host.contains(":") || self.host.allSatisfy({ $0.isNumber || $0 == "." })
        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : self.host))
    }
}

extension ClientEndpoint {
    /// Sets `channel` up for a WebSocket handshake to this endpoint: TLS when `sslContext` is given,
    /// the upgrade request, then `upgraded` once the `101` came (the HTTP handlers gone), or
    /// `refused` with why the connection ended before.
    func addWebSocketHandshake(
        to channel: any Channel, sslContext: NIOSSLContext?, maximumFrameSize: Int, refused: @escaping (String) -> Void,
        upgraded: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) throws {
        let sync = channel.pipeline.syncOperations
        try self.addTLS(sslContext, to: channel)
        let request = UpgradeRequestHandler(endpoint: self, onEnd: refused)
        let boundRequest = NIOLoopBound(request, eventLoop: channel.eventLoop)
        let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: maximumFrameSize, automaticErrorHandling: true) { channel, _ in
            upgraded(channel)
        }
        try sync.addHTTPClientHandlers(
            leftOverBytesStrategy: .forwardBytes,
            withClientUpgrade: (
                upgraders: [upgrader],
                completionHandler: { context in
                    context.pipeline.syncOperations.removeHandler(boundRequest.value, promise: nil)
                }
            ))
        try sync.addHandler(request)
    }
}
