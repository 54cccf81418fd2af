import NIOCore
import NIOEmbedded
import SwitchboardCore
import Testing

@testable import SwitchboardServer

/// The trusted-proxy front: PROXY v2 or X-Forwarded-For name the client before the caps apply.
@Suite("PROXY protocol handler and trusted proxies")
struct ProxyProtocolHandlerTests {
    final class Sink: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var received: [UInt8] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.received += Self.unwrapInboundIn(data).readableBytesView
        }
    }

    final class Resolution: @unchecked Sendable {
        var addresses: [String] = []
        let sink = Sink()
    }

    static func channel(_ resolution: Resolution) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let handler = ProxyProtocolHandler(proxyAddress: "10.0.0.1", headDeadline: .now() + .seconds(10)) { context, address in
            resolution.addresses.append(address)
            try context.pipeline.syncOperations.addHandler(resolution.sink, position: .after(context.handler))
        }
        try channel.pipeline.syncOperations.addHandler(handler)
        return channel
    }

    @Test func proxyHeaderIsRemovedAndNamesTheClient() throws {
        let resolution = Resolution()
        let channel = try Self.channel(resolution)
        var buffer = ByteBuffer()
        ProxyProtocolHeader(
            sourceAddress: "198.51.100.9", sourcePort: 4000, destinationAddress: "10.0.0.2", destinationPort: 80,
            clientUsedTLS: true
        ).write(into: &buffer)
        buffer.writeString("GET /ws HTTP/1.1\r\n\r\n")
        // Byte by byte: the header may arrive in pieces.
        for i in 0..<buffer.readableBytes {
            try channel.writeInbound(buffer.getSlice(at: i, length: 1)!)
            if i < 27 { #expect(resolution.addresses.isEmpty) }
        }
        #expect(resolution.addresses == ["198.51.100.9"])
        #expect(String(decoding: resolution.sink.received, as: UTF8.self) == "GET /ws HTTP/1.1\r\n\r\n")
        let handler = try channel.pipeline.syncOperations.handler(type: ProxyProtocolHandler.self)
        #expect(handler.clientAddress == "198.51.100.9" && handler.clientUsedTLS == true)
        _ = try channel.finish()
    }

    @Test func lastForwardedForEntryNamesTheClientAndTheHeadPassesUnchanged() throws {
        let resolution = Resolution()
        let channel = try Self.channel(resolution)
        let head = "GET /ws HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6, 192.0.2.1\r\nx-forwarded-proto: https\r\n\r\nrest"
        try channel.writeInbound(ByteBuffer(string: String(head.prefix(20))))
        #expect(resolution.addresses.isEmpty)
        try channel.writeInbound(ByteBuffer(string: String(head.dropFirst(20))))
        #expect(resolution.addresses == ["192.0.2.1"])
        #expect(String(decoding: resolution.sink.received, as: UTF8.self) == head)
        _ = try channel.finish()
    }

    /// The head's end is searched incrementally (only new bytes at each read): it must be found
    /// wherever the reads cut it, the blank line itself included, and one byte at a time.
    @Test func headEndIsFoundWhereverTheReadsCutIt() throws {
        let head = "GET /ws HTTP/1.1\r\nX-Forwarded-For: 192.0.2.1\r\n\r\nrest"
        let bytes = Array(head.utf8)
        for cut in 1..<bytes.count {
            let resolution = Resolution()
            let channel = try Self.channel(resolution)
            try channel.writeInbound(ByteBuffer(bytes: bytes[..<cut]))
            try channel.writeInbound(ByteBuffer(bytes: bytes[cut...]))
            #expect(resolution.addresses == ["192.0.2.1"], "cut at \(cut)")
            #expect(resolution.sink.received == bytes, "cut at \(cut)")
            _ = try channel.finish()
        }
        let resolution = Resolution()
        let channel = try Self.channel(resolution)
        for byte in bytes { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
        #expect(resolution.addresses == ["192.0.2.1"])
        #expect(resolution.sink.received == bytes)
        _ = try channel.finish()
    }

    /// A head the handler cannot read to its end is refused: resolving it with the proxy's own
    /// address would exempt its client from the per-address caps.
    @Test func headTooLongToReadIsRefusedNotPassedAsTheProxy() throws {
        let resolution = Resolution()
        let channel = try Self.channel(resolution)
        let filler = "X-Filler: " + String(repeating: "a", count: 1000) + "\r\n"
        try channel.writeInbound(ByteBuffer(string: "GET /ws HTTP/1.1\r\n" + String(repeating: filler, count: 10)))
        try channel.writeInbound(ByteBuffer(string: String(repeating: filler, count: 10)))
        #expect(resolution.addresses.isEmpty)
        let answer = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: answer).hasPrefix("HTTP/1.1 431 "))
        #expect(!channel.isActive)
        _ = try? channel.finish()
    }

    @Test func noClientNamedKeepsTheProxyAddress() throws {
        let resolution = Resolution()
        let channel = try Self.channel(resolution)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nX-Forwarded-For: not-an-ip\r\n\r\n"))
        #expect(resolution.addresses == ["10.0.0.1"])
        _ = try channel.finish()
    }

    @Test func malformedProxyHeaderClosesTheConnection() throws {
        let resolution = Resolution()
        let channel = try Self.channel(resolution)
        try channel.writeInbound(ByteBuffer(bytes: ProxyProtocolHeader.signature + [0x21, 0x11, 0xFF, 0xFF]))
        #expect(resolution.addresses.isEmpty)
        #expect(!channel.isActive)
    }

    @Test func trustedProxiesTakeAddressesAndCIDRBlocks() throws {
        let set = try TrustedProxySet(["127.0.0.1", "10.0.0.0/8", "192.168.4.0/22", "fd00::/8"])
        for inside in ["127.0.0.1", "10.255.1.2", "192.168.7.255", "fd12::1"] { #expect(set.contains(inside), "\(inside)") }
        for outside in ["127.0.0.2", "11.0.0.1", "192.168.8.0", "fe80::1", "::1", "", "garbage"] {
            #expect(!set.contains(outside), "\(outside)")
        }
        #expect(throws: ConfigurationError.self) { try TrustedProxySet(["10.0.0.0/33"]) }
        #expect(throws: ConfigurationError.self) { try TrustedProxySet(["example.com"]) }
        var configuration = ServerConfiguration()
        #expect(throws: ConfigurationError.self) { try configuration.set("trustedProxies", text: "10.0.0.1,10.0.0.0/40") }
        try configuration.set("trustedProxies", text: "10.0.0.0/8, ::1")
        #expect(configuration.trustedProxies == ["10.0.0.0/8", "::1"])
    }
}
