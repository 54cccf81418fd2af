import Foundation
import NIOCore
import NIOPosix

/// Passes received bytes to an async stream.
final class ByteStreamHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let continuation: AsyncStream<ByteBuffer>.Continuation

    init(continuation: AsyncStream<ByteBuffer>.Continuation) {
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.continuation.yield(Self.unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.continuation.finish()
    }
}

/// A raw TCP client for tests over real loopback sockets: writes bytes, reads what arrives.
struct LoopbackClient {
    let channel: any Channel
    var iterator: AsyncStream<ByteBuffer>.AsyncIterator
    var pending = ByteBuffer()

    static func connect(port: Int, group: any EventLoopGroup) async throws -> LoopbackClient {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteStreamHandler(continuation: continuation))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return LoopbackClient(channel: channel, iterator: stream.makeAsyncIterator())
    }

    func send(_ bytes: [UInt8]) async throws {
        try await self.channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func send(_ text: String) async throws {
        try await self.send(Array(text.utf8))
    }

    /// Reads more bytes into `pending`; false at end of stream.
    mutating func readMore() async throws -> Bool {
        guard var chunk = await self.iterator.next() else { return false }
        self.pending.writeBuffer(&chunk)
        return true
    }

    /// Reads an HTTP response head and its Content-Length body.
    mutating func readHTTPResponse() async throws -> (status: Int, body: String) {
        while true {
            let text = String(buffer: self.pending)
            if let range = text.range(of: "\r\n\r\n") {
                let head = String(text[..<range.lowerBound])
                let status = Int(head.split(separator: " ")[1]) ?? 0
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                let headBytes = text[..<range.upperBound].utf8.count
                while self.pending.readableBytes < headBytes + length {
                    guard try await self.readMore() else { break }
                }
                self.pending.moveReaderIndex(forwardBy: headBytes)
                let body = self.pending.readString(length: min(length, self.pending.readableBytes)) ?? ""
                return (status, body)
            }
            guard try await self.readMore() else { return (0, "") }
        }
    }

    /// Sends the WebSocket handshake and returns the status code.
    mutating func upgrade(path: String = "/ws") async throws -> Int {
        try await self.send(
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        return try await self.readHTTPResponse().status
    }

    /// The next server frame.
    mutating func readFrame() async throws -> TestFrames.ServerFrame? {
        while true {
            var copy = self.pending
            if let frame = TestFrames.parse(&copy).first {
                // Consume exactly one frame.
                var consume = self.pending
                _ = TestFrames.parseOne(&consume)
                self.pending = consume
                return frame
            }
            guard try await self.readMore() else { return nil }
        }
    }

    /// The next text message that satisfies `match` (skipping others).
    mutating func readMessage(where match: (String) -> Bool = { _ in true }) async throws -> String? {
        while let frame = try await self.readFrame() {
            if frame.opcode == 0x1, match(frame.text) { return frame.text }
            if frame.opcode == 0x8 { return nil }
        }
        return nil
    }
}

extension TestFrames {
    /// Parses and consumes one frame.
    static func parseOne(_ buffer: inout ByteBuffer) -> ServerFrame? {
        let start = buffer.readerIndex
        var probe = buffer
        guard let frame = Self.parse(&probe).first else { return nil }
        let headerLength = frame.payload.count < 126 ? 2 : (frame.payload.count <= 65535 ? 4 : 10)
        buffer.moveReaderIndex(to: start + headerLength + frame.payload.count)
        return frame
    }
}
