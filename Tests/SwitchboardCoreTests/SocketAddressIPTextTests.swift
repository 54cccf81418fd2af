import NIOCore
import SwitchboardCore
import Testing

@Suite("SocketAddress.ipText")
struct SocketAddressIPTextTests {
    @Test("IPv4 text is what ipAddress (inet_ntop) gives, at every octet width and edge", arguments: [
        "0.0.0.0", "255.255.255.255", "127.0.0.1", "10.0.0.9", "192.168.100.10", "1.22.133.4", "99.100.9.10", "8.8.8.8",
    ])
    func knownAddresses(text: String) throws {
        let address = try SocketAddress(ipAddress: text, port: 4_000)
        #expect(address.ipText == text)
        #expect(address.ipText == address.ipAddress)
    }

    @Test("IPv4 text matches ipAddress on 20,000 generated addresses")
    func generatedAddresses() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let value = UInt32.random(in: .min ... .max, using: &generator)
            let text = "\(value >> 24).\((value >> 16) & 0xFF).\((value >> 8) & 0xFF).\(value & 0xFF)"
            let address = try SocketAddress(ipAddress: text, port: 1)
            #expect(address.ipText == address.ipAddress, "\(text)")
            #expect(address.ipText == text)
        }
    }

    @Test("IPv6 and Unix addresses fall back to ipAddress")
    func otherFamilies() throws {
        let v6 = try SocketAddress(ipAddress: "2001:db8::1", port: 1)
        #expect(v6.ipText == v6.ipAddress)
        #expect(v6.ipText == "2001:db8::1")
        let unix = try SocketAddress(unixDomainSocketPath: "/tmp/switchboard-test.sock")
        #expect(unix.ipText == nil)
    }
}
