import NIOCore
import SwitchboardCore
import Testing

@Suite("PROXY protocol v2 header")
struct ProxyProtocolHeaderTests {
    static func encoded(_ header: ProxyProtocolHeader) -> ByteBuffer {
        var buffer = ByteBuffer()
        header.write(into: &buffer)
        return buffer
    }

    @Test func ipv4RoundTripWithTheSSLTLV() {
        let header = ProxyProtocolHeader(
            sourceAddress: "203.0.113.7", sourcePort: 51_000, destinationAddress: "127.0.0.1", destinationPort: 8000,
            clientUsedTLS: true, tlsVersion: "TLSv1.3")
        var buffer = Self.encoded(header)
        buffer.writeString("GET / HTTP/1.1\r\n\r\n")
        // 16 fixed + 12 addresses + SSL TLV (3 + 5 + version sub-TLV 3 + 7)
        guard case .header(let decoded, let length) = ProxyProtocolHeader.decode(buffer.readableBytesView) else {
            Issue.record("not decoded")
            return
        }
        #expect(length == 16 + 12 + 3 + 5 + 3 + 7)
        #expect(decoded == header)
        #expect(Array(buffer.readableBytesView.prefix(12)) == ProxyProtocolHeader.signature)
        #expect(buffer.readableBytesView[buffer.readerIndex + 12] == 0x21)  // v2, PROXY
        #expect(buffer.readableBytesView[buffer.readerIndex + 13] == 0x11)  // TCP over IPv4
    }

    @Test func ipv6RoundTripWithoutTLS() {
        let header = ProxyProtocolHeader(
            sourceAddress: "2001:db8::7", sourcePort: 1, destinationAddress: "::1", destinationPort: 65535)
        let buffer = Self.encoded(header)
        #expect(buffer.readableBytes == 16 + 36)
        #expect(ProxyProtocolHeader.decode(buffer.readableBytesView) == .header(header, length: 52))
    }

    @Test func everyPrefixAsksForMoreAndOtherBytesAreNotProxy() {
        let buffer = Self.encoded(
            ProxyProtocolHeader(sourceAddress: "10.0.0.1", sourcePort: 2, destinationAddress: "10.0.0.2", destinationPort: 3))
        for n in 0..<buffer.readableBytes {
            let prefix = buffer.getSlice(at: 0, length: n)!
            #expect(ProxyProtocolHeader.decode(prefix.readableBytesView) == .needMoreBytes, "prefix \(n)")
        }
        #expect(ProxyProtocolHeader.decode(ByteBuffer(string: "GET / HTTP/1.1\r\n").readableBytesView) == .notProxyProtocol)
        #expect(ProxyProtocolHeader.decode(ByteBuffer(bytes: [0x0D, 0x0A, 0x0D, 0x0B]).readableBytesView) == .notProxyProtocol)
    }

    @Test func hostileHeadersAreRefused() {
        var tooLong = ByteBuffer(bytes: ProxyProtocolHeader.signature + [0x21, 0x11, 0xFF, 0xFF])
        if case .invalid = ProxyProtocolHeader.decode(tooLong.readableBytesView) {} else { Issue.record("65535-byte body accepted") }
        tooLong = ByteBuffer(bytes: ProxyProtocolHeader.signature + [0x11, 0x11, 0x00, 0x0C] + Array(repeating: 0, count: 12))
        if case .invalid = ProxyProtocolHeader.decode(tooLong.readableBytesView) {} else { Issue.record("version 1 accepted") }
        // A TLV whose length runs past the header.
        let overrun = ProxyProtocolHeader.signature + [0x21, 0x11, 0x00, 0x0F] + Array(repeating: 1, count: 12) + [0x20, 0x00, 0x09]
        if case .invalid = ProxyProtocolHeader.decode(ByteBuffer(bytes: overrun).readableBytesView) {} else {
            Issue.record("overrunning TLV accepted")
        }
        // Short address block for the family.
        let short = ProxyProtocolHeader.signature + [0x21, 0x21, 0x00, 0x04, 1, 2, 3, 4]
        if case .invalid = ProxyProtocolHeader.decode(ByteBuffer(bytes: short).readableBytesView) {} else {
            Issue.record("short IPv6 block accepted")
        }
    }

    @Test func localCarriesNoAddress() {
        let local = ByteBuffer(bytes: ProxyProtocolHeader.signature + [0x20, 0x00, 0x00, 0x00])
        guard case .header(let header, let length) = ProxyProtocolHeader.decode(local.readableBytesView) else {
            Issue.record("LOCAL not decoded")
            return
        }
        #expect(length == 16)
        #expect(header.isLocal && header.sourceAddress == nil)
    }
}
