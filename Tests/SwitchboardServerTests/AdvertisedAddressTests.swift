import Testing

@testable import SwitchboardServer

/// `serve --advertise`: what a node may announce in the registry instead of its bound address.
@Suite struct AdvertisedAddressTests {
    @Test(arguments: [
        ("10.1.2.3", "10.1.2.3", nil),
        ("10.1.2.3:7000", "10.1.2.3", 7000),
        ("node-3.internal", "node-3.internal", nil),
        ("node-3.internal:7000", "node-3.internal", 7000),
        ("localhost", "localhost", nil),
        ("[fd00::1]:7000", "fd00::1", 7000),
        ("[fd00::1]", "fd00::1", nil),
        ("fd00::1", "fd00::1", nil),
        ("2001:db8:0:0:0:0:0:1", "2001:db8:0:0:0:0:0:1", nil),
    ] as [(String, String, Int?)])
    func accepted(text: String, host: String, port: Int?) throws {
        let address = try AdvertisedAddress.parse(text)
        #expect(address.host == host)
        #expect(address.port == port)
    }

    @Test(arguments: [
        "", "0.0.0.0", "0.0.0.0:7000", "[::]:7000", "::", "::0", "[0:0:0:0:0:0:0:0]:7000", "fd00:::1", "1::2::3", "host:0", "host:65536", "host:-1", "host:", ":7000",
        "host:7000:1", "-bad.example", "bad-.example", "a..b", "sp ace", "ünicode.example", "host/path", "[fd00::1",
        "[fd00::1]x", "[host]:7000", "1.2.3.4.5.6", String(repeating: "a", count: 64) + ".example",
        String(repeating: "a.", count: 130) + "b", "999.1.1.1",
    ])
    func refused(text: String) {
        #expect(throws: ConfigurationError.self) { try AdvertisedAddress.parse(text) }
    }

    @Test func theBoundPortFillsAMissingOne() throws {
        #expect(try AdvertisedAddress.parse("node-3").registryAddress(boundPort: 4242) == "node-3:4242")
        #expect(try AdvertisedAddress.parse("node-3:7000").registryAddress(boundPort: 4242) == "node-3:7000")
        #expect(try AdvertisedAddress.parse("fd00::1").registryAddress(boundPort: 4242) == "[fd00::1]:4242")
    }

    @Test func everySourceSetsIt() throws {
        var configuration = ServerConfiguration()
        try configuration.set("advertise", .string("node-3:7000"))
        #expect(configuration.advertise == AdvertisedAddress(host: "node-3", port: 7000))
        #expect(throws: ConfigurationError.self) { try configuration.set("advertise", .string("0.0.0.0")) }
        try configuration.set("advertise", .string(""))
        #expect(configuration.advertise == nil)
        #expect(ServerConfiguration.environmentName(for: "advertise") == "SWITCHBOARD_ADVERTISE")
    }
}
