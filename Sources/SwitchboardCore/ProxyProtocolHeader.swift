public import NIOCore

/// A PROXY protocol version 2 header (haproxy.org/download/2.6/doc/proxy-protocol.txt): the binary
/// preamble a proxy sends before the client's bytes to tell the server who the client is.
///
/// `switchboard balance --forward-client-address proxy-protocol` writes one; a node reads one only on a
/// connection from a `--trusted-proxy` address. Only what Switchboard uses is kept: the command, the TCP
/// source and destination, and whether the client spoke TLS to the proxy (the `PP2_TYPE_SSL` TLV).
/// Decoding is bounded: the header is at most 16 + 65,535 bytes by construction, and callers cap it
/// lower with `maximumLength`.
public struct ProxyProtocolHeader: Sendable, Hashable {
    /// The 12-byte signature every v2 header starts with.
    public static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// Largest header a Switchboard node accepts (addresses plus a few TLVs).
    public static let maximumLength = 536

    /// `PROXY` carries addresses; `LOCAL` (health checks from the proxy itself) does not.
    public var isLocal: Bool
    /// Client address and port as text (`203.0.113.7`, `2001:db8::1`); nil for LOCAL or an unknown family.
    public var sourceAddress: String?
    public var sourcePort: Int
    /// The address and port the client connected to.
    public var destinationAddress: String?
    public var destinationPort: Int
    /// The client used TLS to reach the proxy (`PP2_TYPE_SSL` with `PP2_CLIENT_SSL`).
    public var clientUsedTLS: Bool
    /// The TLS version the proxy negotiated (`PP2_SUBTYPE_SSL_VERSION`), when sent.
    public var tlsVersion: String?

    public init(
        sourceAddress: String?, sourcePort: Int, destinationAddress: String?, destinationPort: Int,
        clientUsedTLS: Bool = false, tlsVersion: String? = nil, isLocal: Bool = false
    ) {
        self.sourceAddress = sourceAddress
        self.sourcePort = sourcePort
        self.destinationAddress = destinationAddress
        self.destinationPort = destinationPort
        self.clientUsedTLS = clientUsedTLS
        self.tlsVersion = tlsVersion
        self.isLocal = isLocal
    }

    /// What `decode` found at the start of a buffer.
    public enum Decoded: Sendable, Hashable {
        /// The bytes so far are a prefix of a v2 header: read more.
        case needMoreBytes
        /// The bytes do not start with the v2 signature (a plain request).
        case notProxyProtocol
        /// A header of `length` bytes.
        case header(ProxyProtocolHeader, length: Int)
        /// Signature present but the header is malformed or longer than allowed.
        case invalid(String)
    }

    /// Reads a header at the start of `bytes` without consuming it.
    public static func decode(_ bytes: ByteBufferView, maximumLength: Int = ProxyProtocolHeader.maximumLength) -> Decoded {
        let prefix = bytes.prefix(Self.signature.count)
        guard prefix.elementsEqual(Self.signature.prefix(prefix.count)) else { return .notProxyProtocol }
        guard bytes.count >= 16 else { return .needMoreBytes }
        let base = bytes.startIndex
        let versionCommand = bytes[base + 12]
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY protocol version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("PROXY protocol command \(command)") }
        let family = bytes[base + 13]
        let bodyLength = Int(bytes[base + 14]) << 8 | Int(bytes[base + 15])
        let length = 16 + bodyLength
        guard length <= maximumLength else { return .invalid("PROXY protocol header of \(length) bytes") }
        guard bytes.count >= length else { return .needMoreBytes }
        let body = Array(bytes[(base + 16)..<(base + length)])
        var header = ProxyProtocolHeader(
            sourceAddress: nil, sourcePort: 0, destinationAddress: nil, destinationPort: 0, isLocal: command == 0)
        var tlvStart = 0
        switch family {
        case 0x11:  // TCP over IPv4
            guard body.count >= 12 else { return .invalid("PROXY protocol IPv4 block too short") }
            header.sourceAddress = body[0..<4].map { String($0) }.joined(separator: ".")
            header.destinationAddress = body[4..<8].map { String($0) }.joined(separator: ".")
            header.sourcePort = Int(body[8]) << 8 | Int(body[9])
            header.destinationPort = Int(body[10]) << 8 | Int(body[11])
            tlvStart = 12
        case 0x21:  // TCP over IPv6
            guard body.count >= 36 else { return .invalid("PROXY protocol IPv6 block too short") }
            header.sourceAddress = Self.ipv6Text(body[0..<16])
            header.destinationAddress = Self.ipv6Text(body[16..<32])
            header.sourcePort = Int(body[32]) << 8 | Int(body[33])
            header.destinationPort = Int(body[34]) << 8 | Int(body[35])
            tlvStart = 36
        default:
            // UNSPEC, UDP or UNIX: no TCP address to use; the TLVs are not read.
            return .header(header, length: length)
        }
        guard !header.isLocal else {
            header.sourceAddress = nil
            header.destinationAddress = nil
            return .header(header, length: length)
        }
        var i = tlvStart
        while i + 3 <= body.count {
            let type = body[i]
            let valueLength = Int(body[i + 1]) << 8 | Int(body[i + 2])
            let valueStart = i + 3
            guard valueStart + valueLength <= body.count else { return .invalid("PROXY protocol TLV overruns the header") }
            if type == 0x20, valueLength >= 5 {  // PP2_TYPE_SSL: client (1), verify (4), sub-TLVs
                header.clientUsedTLS = body[valueStart] & 0x01 != 0
                var j = valueStart + 5
                while j + 3 <= valueStart + valueLength {
                    let subType = body[j]
                    let subLength = Int(body[j + 1]) << 8 | Int(body[j + 2])
                    guard j + 3 + subLength <= valueStart + valueLength else { break }
                    if subType == 0x21 {  // PP2_SUBTYPE_SSL_VERSION
                        header.tlsVersion = String(decoding: body[(j + 3)..<(j + 3 + subLength)], as: UTF8.self)
                    }
                    j += 3 + subLength
                }
            }
            i = valueStart + valueLength
        }
        return .header(header, length: length)
    }

    /// Writes the header for a TCP connection from `source` to `destination` (both IPv4 or both IPv6;
    /// otherwise a LOCAL header without addresses), with the SSL TLV when `clientUsedTLS`.
    public func write(into buffer: inout ByteBuffer) {
        buffer.writeBytes(Self.signature)
        let source = self.sourceAddress.flatMap(Self.addressBytes)
        let destination = self.destinationAddress.flatMap(Self.addressBytes)
        guard !self.isLocal, let source, let destination, source.count == destination.count else {
            buffer.writeBytes([0x20, 0x00, 0x00, 0x00])  // v2 LOCAL, UNSPEC, no body
            return
        }
        var tlv: [UInt8] = []
        if self.clientUsedTLS {
            var sub: [UInt8] = []
            if let version = self.tlsVersion, version.utf8.count <= 255 {
                sub = [0x21, 0x00, UInt8(version.utf8.count)] + Array(version.utf8)
            }
            let value: [UInt8] = [0x01, 0x00, 0x00, 0x00, 0x00] + sub  // PP2_CLIENT_SSL, verify = 0
            tlv = [0x20, UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
        }
        let bodyLength = 2 * source.count + 4 + tlv.count
        buffer.writeBytes([0x21, source.count == 4 ? 0x11 : 0x21, UInt8(bodyLength >> 8), UInt8(bodyLength & 0xFF)])
        buffer.writeBytes(source)
        buffer.writeBytes(destination)
        buffer.writeInteger(UInt16(truncatingIfNeeded: self.sourcePort))
        buffer.writeInteger(UInt16(truncatingIfNeeded: self.destinationPort))
        buffer.writeBytes(tlv)
    }

    /// 4 or 16 bytes of an IP literal; nil for anything else.
    public static func addressBytes(_ text: String) -> [UInt8]? {
        guard let address = try? SocketAddress(ipAddress: text, port: 0) else { return nil }
        // The address inside the sockaddr: sockaddr_in keeps it at offset 4 (4 bytes), sockaddr_in6 at
        // offset 8 (16 bytes), on Linux and the BSDs alike.
        let range: Range<Int>
        switch address {
        case .v4: range = 4..<8
        case .v6: range = 8..<24
        default: return nil
        }
        return address.withSockAddr { pointer, size in
            guard size >= range.upperBound else { return nil }
            return Array(UnsafeRawBufferPointer(start: pointer, count: size)[range])
        }
    }

    /// The canonical text of 16 address bytes (through `SocketAddress`, i.e. `inet_ntop`).
    private static func ipv6Text(_ bytes: ArraySlice<UInt8>) -> String? {
        let groups = stride(from: bytes.startIndex, to: bytes.endIndex, by: 2).map { i in
            String(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]), radix: 16)
        }
        return (try? SocketAddress(ipAddress: groups.joined(separator: ":"), port: 0))?.ipAddress
    }
}
