import NIOCore
import Testing

@testable import SwitchboardBalancer

/// Host names announced in the registry (`serve --advertise name:port`).
@Suite struct HostNameResolverTests {
    @Test func ipLiteralsNeedNoLookup() {
        #expect(HostNameResolver.isIPLiteral("127.0.0.1"))
        #expect(HostNameResolver.isIPLiteral("::1"))
        #expect(!HostNameResolver.isIPLiteral("localhost"))
        #expect(!HostNameResolver.isIPLiteral("node-3.internal"))
    }

    @Test func aNameWithBothKindsOfAddressGivesItsIPv4One() throws {
        // /etc/hosts names localhost for 127.0.0.1 and, on most systems, ::1 too.
        let address = try HostNameResolver.resolve(host: "localhost", port: 4242)
        #expect(address.ipAddress == "127.0.0.1")
        #expect(address.port == 4242)
    }

    @Test func aNameThatDoesNotResolveThrows() {
        // `.invalid` is reserved never to resolve (RFC 6761).
        #expect(throws: BalancerConfigurationError.self) { try HostNameResolver.resolve(host: "no-such-node.invalid", port: 1) }
    }

    @Test func aRegistryEntryMayNameAHost() throws {
        let entry = try #require(RegistryNode.parse(Array(#"{"id":"n1","address":"node-3.internal:7000"}"#.utf8)))
        #expect(entry.node.host == "node-3.internal")
        #expect(entry.node.id == "node-3.internal:7000")
        let v6 = try #require(RegistryNode.parse(Array(#"{"id":"n2","address":"[fd00::1]:7000"}"#.utf8)))
        #expect(v6.node.host == "fd00::1")
        #expect(v6.node.id == "[fd00::1]:7000")
    }
}
