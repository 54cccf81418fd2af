import SwitchboardCore
@testable import SwitchboardServer
import Testing

/// Flags, environment variables and config files set options through the same checks; flags
/// arrive typed (no number is turned back into text on the way).
@Suite("Configuration sources")
struct ConfigurationSourcesTests {
    @Test("a typed number from a flag is checked like the file's and the environment's")
    func typedNumbers() throws {
        var configuration = ServerConfiguration()
        try configuration.set("maxConnections", .number(5000))
        #expect(configuration.maxConnections == 5000)
        try configuration.set("pingInterval", .number(2.5))
        #expect(configuration.pingInterval == 2.5)
        // Out of range, not whole, not finite, absurd: refused, never trapped.
        for bad in [Double(Int.max), 1e12, -1, .nan, .infinity, 2.5] {
            #expect(throws: ConfigurationError.self) { try configuration.set("maxConnections", .number(bad)) }
        }
        #expect(throws: ConfigurationError.self) { try configuration.set("port", .number(70_000)) }
        // A drain window past a day overflowed the drain's arithmetic; thousands of loops trap in NIO at start.
        try configuration.set("drainSeconds", .number(86_400))
        #expect(throws: ConfigurationError.self) { try configuration.set("drainSeconds", .number(86_401)) }
        try configuration.set("eventLoopThreads", .number(1024))
        #expect(throws: ConfigurationError.self) { try configuration.set("eventLoopThreads", .number(1025)) }
        #expect(throws: ConfigurationError.self) { try configuration.set("maxConnections", .string("5000")) }
        #expect(configuration.maxConnections == 5000)
    }

    @Test("the weight a node announces is 1-100, anything else refused with the option's name")
    func weightRange() throws {
        var configuration = ServerConfiguration()
        #expect(configuration.weight == 1)
        try configuration.set("weight", .number(20))
        #expect(configuration.weight == 20)
        for bad in [0, -3, 101, 1e12, 2.5, .nan] {
            #expect(throws: ConfigurationError.self) { try configuration.set("weight", .number(bad)) }
        }
        #expect(configuration.weight == 20)
    }

    @Test("the three sources agree: the same value from a flag, a variable and a file gives the same configuration")
    func sourcesAgree() throws {
        var fromFlag = ServerConfiguration()
        try fromFlag.set("outboundLimit", .number(4096))
        try fromFlag.set("trustedProxies", .list(["10.0.0.0/8", "::1"]))
        try fromFlag.set("echoEndpoint", .flag(true))
        var fromEnvironment = ServerConfiguration()
        try fromEnvironment.apply(environment: [
            "SWITCHBOARD_OUTBOUND_LIMIT": "4096", "SWITCHBOARD_TRUSTED_PROXIES": "10.0.0.0/8, ::1", "SWITCHBOARD_ECHO_ENDPOINT": "yes",
        ])
        var fromFile = ServerConfiguration()
        try fromFile.apply(
            file: JSONObject([
                ("outboundLimit", .number("4096")), ("trustedProxies", .array([.string("10.0.0.0/8"), .string("::1")])),
                ("echoEndpoint", .bool(true)),
            ]))
        #expect(fromFlag == fromEnvironment)
        #expect(fromFlag == fromFile)
    }

    @Test("environment names: a run of capitals is one word (..._PER_IP, ..._PRESENCE_TTL); the old ..._PER_I_P spelling still reads, the new one wins")
    func environmentNamesOfAcronyms() throws {
        #expect(ServerConfiguration.environmentName(for: "maxConnectionsPerIP") == "SWITCHBOARD_MAX_CONNECTIONS_PER_IP")
        #expect(ServerConfiguration.environmentName(for: "presenceTTL") == "SWITCHBOARD_PRESENCE_TTL")
        #expect(ServerConfiguration.environmentName(for: "tlsCert") == "SWITCHBOARD_TLS_CERT")
        #expect(ConfigurationKey.environmentName(for: "maxIPCount", prefix: "P_") == "P_MAX_IP_COUNT")
        #expect(ConfigurationKey.environmentName(for: "http2Port", prefix: "P_") == "P_HTTP2_PORT")
        // Every option's name is a distinct variable, and upper case letters, digits and `_` only.
        let names = ServerConfiguration.optionKeys.map { ServerConfiguration.environmentName(for: $0) }
        #expect(Set(names).count == names.count)
        #expect(names.allSatisfy { $0.allSatisfy { $0.isUppercase || $0.isNumber || $0 == "_" } })

        var configuration = ServerConfiguration()
        try configuration.apply(environment: ["SWITCHBOARD_MAX_CONNECTIONS_PER_IP": "7", "SWITCHBOARD_MAX_POLLS_PER_IP": "3", "SWITCHBOARD_PRESENCE_TTL": "9"])
        #expect(configuration.maxConnectionsPerIP == 7 && configuration.maxPollsPerIP == 3 && configuration.presenceTTL == 9)
        var legacy = ServerConfiguration()
        try legacy.apply(environment: ["SWITCHBOARD_MAX_CONNECTIONS_PER_I_P": "8"])
        #expect(legacy.maxConnectionsPerIP == 8)
        var both = ServerConfiguration()
        try both.apply(environment: ["SWITCHBOARD_MAX_CONNECTIONS_PER_I_P": "8", "SWITCHBOARD_MAX_CONNECTIONS_PER_IP": "9"])
        #expect(both.maxConnectionsPerIP == 9)
    }

    @Test("a file's value of the wrong kind is refused with the option's own message")
    func wrongKinds() {
        var configuration = ServerConfiguration()
        #expect(throws: ConfigurationError.self) {
            try configuration.apply(file: JSONObject([("trustedProxies", .array([.number("1")]))]))
        }
        #expect(throws: ConfigurationError.self) { try configuration.apply(file: JSONObject([("host", .null)])) }
        #expect(throws: ConfigurationError.self) { try configuration.apply(file: JSONObject([("maxSubscriptions", .object(JSONObject([])))])) }
        #expect(ConfigurationValue(json: .number("1e400")) == .unsupported)
    }
}
