import Foundation
import NIOCore
import NIOPosix

/// What a loopback client's stream carries: bytes from the server, or the end of a read's deadline.
enum LoopbackEvent: Sendable {
    case bytes(ByteBuffer)
    /// The deadline of read number `n` passed (ignored when that read is over).
    case deadline(UInt64)
}

/// A read that got nothing within its deadline: the test fails instead of hanging the suite.
struct LoopbackReadTimeout: Error, CustomStringConvertible {
    let timeout: TimeAmount
    var description: String { "loopback read: nothing within \(self.timeout.nanoseconds / 1_000_000) ms" }
}

/// Passes received bytes to an async stream.
final class ByteStreamHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let continuation: AsyncStream<LoopbackEvent>.Continuation

    init(continuation: AsyncStream<LoopbackEvent>.Continuation) {
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.continuation.yield(.bytes(Self.unwrapInboundIn(data)))
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.continuation.finish()
    }
}

/// A raw TCP client for tests over real loopback sockets: writes bytes, reads what arrives.
/// Every read has a deadline (`readTimeout`): a lost frame fails the test with
/// `LoopbackReadTimeout` instead of hanging the suite.
struct LoopbackClient {
    /// The deadline of each read unless a read says otherwise.
    static let readTimeout: TimeAmount = .seconds(10)

    let channel: any Channel
    let continuation: AsyncStream<LoopbackEvent>.Continuation
    var iterator: AsyncStream<LoopbackEvent>.AsyncIterator
    var pending = ByteBuffer()
    var reads: UInt64 = 0

    static func connect(port: Int, group: any EventLoopGroup) async throws -> LoopbackClient {
        let (stream, continuation) = AsyncStream<LoopbackEvent>.makeStream()
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteStreamHandler(continuation: continuation))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return LoopbackClient(channel: channel, continuation: continuation, iterator: stream.makeAsyncIterator())
    }

    func send(_ bytes: [UInt8]) async throws {
        try await self.channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func send(_ text: String) async throws {
        try await self.send(Array(text.utf8))
    }

    /// Reads more bytes into `pending`; false at end of stream. Throws `LoopbackReadTimeout`
    /// when nothing arrives within `timeout`.
    mutating func readMore(timeout: TimeAmount = Self.readTimeout) async throws -> Bool {
        self.reads &+= 1
        let read = self.reads
        // A task, not the channel's event loop: a read may come after the test shut its loops down.
        let deadline = Task { [continuation] in
            try await Task.sleep(nanoseconds: UInt64(max(0, timeout.nanoseconds)))
            continuation.yield(.deadline(read))
        }
        defer { deadline.cancel() }
        while true {
            switch await self.iterator.next() {
            case .none:
                return false
            case .bytes(var chunk):
                self.pending.writeBuffer(&chunk)
                return true
            case .deadline(let n):
                if n == read { throw LoopbackReadTimeout(timeout: timeout) }
            // An earlier read's deadline that fired as that read ended: not ours.
            }
        }
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
