import NIOCore
import SwitchboardCore
import Testing

@testable import SwitchboardBalancer

/// Config file, `SWITCHBOARD_BALANCE_*` and flags, applied in that order (later wins), and what a reload
/// may change.
@Suite struct BalancerConfigurationLoadingTests {
    static let file = JSONObject([
        ("listen", .string("127.0.0.1:7000")),
        ("nodes", .array([.string("127.0.0.1:8001"), .string("127.0.0.1:8002,weight=3")])),
        ("algorithm", .string("least-conn")),
        ("hashBalanceFactor", .number("150")),
        ("headerTimeout", .number("2.5")),
        ("forwardClientAddress", .string("proxy-protocol")),
    ])

    @Test func fileThenEnvironmentThenFlags() throws {
        var c = BalancerConfiguration()
        try c.apply(file: Self.file)
        #expect(c.port == 7000 && c.algorithm == .leastConnections && c.hashBalanceFactor == 1.5)
        #expect(c.nodes == [BackendNode(host: "127.0.0.1", port: 8001), BackendNode(host: "127.0.0.1", port: 8002, weight: 3)])
        #expect(c.headerTimeout == .milliseconds(2500))
        #expect(c.clientAddressForwarding == .proxyProtocol)
        try c.apply(environment: [
            "SWITCHBOARD_BALANCE_ALGORITHM": "round-robin", "SWITCHBOARD_BALANCE_NODES": "127.0.0.1:9001;127.0.0.1:9002,weight=2",
            "SWITCHBOARD_PORT": "1",  // serve's variables are not ours
        ])
        #expect(c.algorithm == .roundRobin && c.port == 7000)
        #expect(c.nodes.map(\.description) == ["127.0.0.1:9001", "127.0.0.1:9002,weight=2"])
        try c.set("algorithm", text: "hash")
        #expect(c.algorithm == .hash)
        try c.validate()
    }

    @Test func environmentNames() {
        #expect(BalancerConfiguration.environmentName(for: "hashBalanceFactor") == "SWITCHBOARD_BALANCE_HASH_BALANCE_FACTOR")
        #expect(BalancerConfiguration.environmentName(for: "nodes") == "SWITCHBOARD_BALANCE_NODES")
    }

    @Test(arguments: [
        ("algorithm", "fastest"), ("maxConnections", "0"), ("maxConnections", "9e99"), ("headerTimeout", "-1"),
        ("headerTimeout", "nan"), ("hashBalanceFactor", "99"), ("rise", "101"), ("listen", "nohost"),
        ("nodes", "127.0.0.1:0"), ("nodes", "127.0.0.1:80,weight=101"), ("unknown", "1"), ("threads", "1000"),
        ("forwardClientAddress", "both"),
    ])
    func badValuesAreRefused(key: String, value: String) {
        var c = BalancerConfiguration()
        #expect(throws: BalancerConfigurationError.self) { try c.set(key, text: value) }
    }

    @Test func fileValuesOfTheWrongShapeAreRefused() {
        var c = BalancerConfiguration()
        #expect(throws: BalancerConfigurationError.self) { try c.apply(file: JSONObject([("nodes", .array([.number("1")]))])) }
        #expect(throws: BalancerConfigurationError.self) { try c.apply(file: JSONObject([("rise", .bool(true))])) }
    }

    @Test func restartOnlyDifferencesAreNamed() throws {
        var a = BalancerConfiguration()
        a.nodes = [BackendNode(host: "127.0.0.1", port: 1)]
        var b = a
        b.algorithm = .hash
        b.nodes.append(BackendNode(host: "127.0.0.1", port: 2))
        #expect(b.restartOnlyDifferences(from: a).isEmpty)
        try b.set("listen", text: "127.0.0.1:1")
        try b.set("rise", text: "5")
        #expect(b.restartOnlyDifferences(from: a) == ["listen", "rise"])
    }

    @Test func reconfigureKeepsCountsAndChangesThePicker() throws {
        var c = BalancerConfiguration()
        c.nodes = [BackendNode(host: "127.0.0.1", port: 1), BackendNode(host: "127.0.0.1", port: 2)]
        let router = NodeRouter(configuration: c)
        router.setMembers(c.nodes)
        #expect(router.pick(key: nil, excluding: []) != nil)
        router.reconfigure(algorithm: .roundRobin, hashBalanceFactor: 1.25, maxConnections: 1)
        let (table, _, algorithm) = router.snapshot()
        #expect(algorithm == .roundRobin)
        #expect(table.entries.values.map(\.active).reduce(0, +) == 1)
        #expect(router.admitClient())
        #expect(!router.admitClient())  // the new limit of 1
    }
}
