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

/// The lookup bookkeeping of registry host names, without a resolver.
@Suite struct HostNameLookupsTests {
    static let named = BackendNode(host: "node-3.internal", port: 7000)
    static let other = BackendNode(host: "node-4.internal", port: 7000)
    static let literal = BackendNode(host: "127.0.0.1", port: 7000)
    static let address = try! SocketAddress(ipAddress: "10.0.0.3", port: 7000)
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    @Test func aNameIsLookedUpOnceAtATimeAndNotForIPLiterals() {
        var lookups = HostNameLookups()
        #expect(lookups.due(members: [Self.named, Self.literal], now: Self.t0) == [Self.named])
        // Still in flight at the next read: not started again.
        #expect(lookups.due(members: [Self.named, Self.literal], now: Self.t0 + .seconds(1)).isEmpty)
        #expect(lookups.answered([(Self.named, Self.address)], at: Self.t0 + .seconds(1)).isEmpty)
        #expect(lookups.addresses == [Self.named.id: Self.address])
    }

    @Test func aResolvedNameIsLookedUpAgainAfterItsTimeToLiveAndKeepsItsAddressIfThatFails() {
        var lookups = HostNameLookups()
        _ = lookups.due(members: [Self.named], now: Self.t0)
        _ = lookups.answered([(Self.named, Self.address)], at: Self.t0)
        #expect(lookups.due(members: [Self.named], now: Self.t0 + .seconds(29)).isEmpty)
        #expect(lookups.due(members: [Self.named], now: Self.t0 + .seconds(30)) == [Self.named])
        #expect(lookups.answered([(Self.named, nil)], at: Self.t0 + .seconds(30)) == [Self.named.id])
        #expect(lookups.addresses == [Self.named.id: Self.address])
    }

    @Test func aFailedNameIsReportedOnceAndTriedAgainAfterItsTimeToLive() {
        var lookups = HostNameLookups()
        _ = lookups.due(members: [Self.named], now: Self.t0)
        #expect(lookups.answered([(Self.named, nil)], at: Self.t0) == [Self.named.id])
        #expect(lookups.due(members: [Self.named], now: Self.t0 + .seconds(10)).isEmpty)
        #expect(lookups.due(members: [Self.named], now: Self.t0 + .seconds(30)) == [Self.named])
        // Failing again: not reported a second time.
        #expect(lookups.answered([(Self.named, nil)], at: Self.t0 + .seconds(30)).isEmpty)
        #expect(lookups.addresses.isEmpty)
    }

    @Test func oneBatchOfLookupsAtATimeWhateverTheRegistryLists() {
        var lookups = HostNameLookups()
        #expect(lookups.due(members: [Self.named], now: Self.t0) == [Self.named])
        // The registry now lists other names: nothing more starts until the batch in flight answers.
        #expect(lookups.due(members: [Self.named, Self.other], now: Self.t0 + .seconds(1)).isEmpty)
        _ = lookups.answered([(Self.named, Self.address)], at: Self.t0 + .seconds(2))
        #expect(lookups.due(members: [Self.named, Self.other], now: Self.t0 + .seconds(2)) == [Self.other])
    }

    @Test func onlyMembersAreKeptAndLookupsPerReadAreBounded() {
        var lookups = HostNameLookups()
        lookups.maximumPerRead = 1
        #expect(lookups.due(members: [Self.named, Self.other], now: Self.t0) == [Self.named])
        _ = lookups.answered([(Self.named, Self.address)], at: Self.t0)
        #expect(lookups.due(members: [Self.named, Self.other], now: Self.t0) == [Self.other])
        // named leaves the registry: its address goes.
        _ = lookups.due(members: [Self.other], now: Self.t0)
        #expect(lookups.addresses.isEmpty)
    }
}
