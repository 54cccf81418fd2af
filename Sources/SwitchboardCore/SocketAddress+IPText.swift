public import NIOCore

extension SocketAddress {
    /// The IP address as text, exactly as `ipAddress` gives it, for the address of every accepted
    /// connection (per-address caps, `X-Forwarded-For`): an IPv4 address is written digit by digit
    /// here, where `ipAddress` goes through `inet_ntop` and its `sprintf`, a few hundred
    /// nanoseconds a connection. Other addresses fall back to `ipAddress`.
    public var ipText: String? {
        guard case .v4 = self else { return self.ipAddress }
        // `sin_addr` sits 4 bytes into a `sockaddr_in` (after the family and the port, on Linux and
        // the BSDs alike), its bytes in network order: the first is the first octet.
        let value = self.withSockAddr { address, _ in
            let bytes = UnsafeRawPointer(address) + 4
            return UInt32(bytes.load(as: UInt8.self)) << 24 | UInt32(bytes.load(fromByteOffset: 1, as: UInt8.self)) << 16
                | UInt32(bytes.load(fromByteOffset: 2, as: UInt8.self)) << 8 | UInt32(bytes.load(fromByteOffset: 3, as: UInt8.self))
        }
        return String(unsafeUninitializedCapacity: 15) { bytes in
            var count = 0
            func write(_ octet: UInt8) {
                if octet >= 100 {
                    bytes[count] = UInt8(ascii: "0") &+ octet / 100
                    count &+= 1
                }
                if octet >= 10 {
                    bytes[count] = UInt8(ascii: "0") &+ (octet / 10) % 10
                    count &+= 1
                }
                bytes[count] = UInt8(ascii: "0") &+ octet % 10
                count &+= 1
            }
            write(UInt8(truncatingIfNeeded: value >> 24))
            for shift: UInt32 in stride(from: 16, through: 0, by: -8) {
                bytes[count] = UInt8(ascii: ".")
                count &+= 1
                write(UInt8(truncatingIfNeeded: value >> shift))
            }
            return count
        }
    }
}
