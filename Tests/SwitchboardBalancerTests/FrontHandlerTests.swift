import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import SwitchboardBalancer

/// The answers the front handler gives by itself, before any node is involved.
@Suite struct FrontHandlerTests {
    static func makeChannel(nodesUp: Bool = true, refuse: Bool = false) throws -> (EmbeddedChannel, NodeRouter) {
        var configuration = BalancerConfiguration()
        configuration.nodes = [BackendNode(host: "127.0.0.1", port: 9)]
        configuration.headerTimeout = .seconds(5)
        let router = NodeRouter(configuration: configuration)
        if !nodesUp {
            router.recordCheck(configuration.nodes[0], succeeded: false)
            router.recordCheck(configuration.nodes[0], succeeded: false)
        }
        let handler = FrontHandler(
            settings: FrontSettings(configuration: configuration), router: router,
            logger: Logger(label: "test"), refuseOnArrival: refuse)
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, router)
    }

    static func response(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    @Test func malformedHeadGets400AndTheConnectionEnds() throws {
        let (channel, router) = try Self.makeChannel()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\nHost: a\n\n"))
        let response = try Self.response(channel)
        #expect(response.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(response.contains("Connection: close"))
        #expect(router.snapshot().counters.badRequests == 1)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func slowHeadGets408AtTheDeadline() throws {
        let (channel, router) = try Self.makeChannel()
        // Trickle a byte every 200 ms: each is fine, the whole is late. 21 bytes take 4.2 s.
        for byte in "GET / HTTP/1.1\r\nHost:".utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        }
        #expect(try Self.response(channel).isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(800))
        let response = try Self.response(channel)
        #expect(response.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
        #expect(router.snapshot().counters.headTimeouts == 1)
    }

    @Test func noDeadlineBeforeItIsDue() throws {
        let (channel, _) = try Self.makeChannel()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(4900))
        #expect(try Self.response(channel).isEmpty)
        #expect(channel.isActive)
    }

    @Test func noAvailableNodeGets503() throws {
        let (channel, router) = try Self.makeChannel(nodesUp: false)
        try channel.writeInbound(ByteBuffer(string: "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(try Self.response(channel).hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(router.snapshot().counters.noNodeAvailable == 1)
        #expect(router.snapshot().table.entries["127.0.0.1:9"]?.active == 0)
    }

    @Test func overTheConnectionLimitGets503AtOnce() throws {
        let (channel, _) = try Self.makeChannel(refuse: true)
        #expect(try Self.response(channel).hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(!channel.isActive)
    }

    @Test func routerAdmitsUpToTheLimit() {
        var configuration = BalancerConfiguration()
        configuration.nodes = [BackendNode(host: "127.0.0.1", port: 9)]
        configuration.maxConnections = 2
        let router = NodeRouter(configuration: configuration)
        #expect(router.admitClient())
        #expect(router.admitClient())
        #expect(!router.admitClient())
        router.clientClosed()
        #expect(router.admitClient())
        #expect(router.snapshot().counters.refusedOverLimit == 1)
    }

    /// A node that ends a replayable request's tunnel unanswered is ejected like a refused connect; one
    /// that ends any other request's is not (a client could have made it hang up), though both count.
    @Test func onlyAnUnansweredReplayableRequestEjectsItsNode() {
        var configuration = BalancerConfiguration()
        configuration.nodes = (9...12).map { BackendNode(host: "127.0.0.1", port: $0) }
        let router = NodeRouter(configuration: configuration)
        router.setMembers(configuration.nodes)
        let now = NIODeadline.now()
        #expect(router.endedBeforeResponse(configuration.nodes[0], blame: false, now: now) == nil)
        #expect(router.endedBeforeResponse(configuration.nodes[1], blame: true, now: now) == .seconds(5))
        let snapshot = router.snapshot()
        #expect(snapshot.counters.endedBeforeResponse == 2)
        #expect(snapshot.table.entries["127.0.0.1:9"]?.health.isEjected(at: now) == false)
        #expect(snapshot.table.entries["127.0.0.1:10"]?.health.isEjected(at: now) == true)
        let metrics = String(buffer: AdminReport.metricsText(table: snapshot.table, counters: snapshot.counters, now: now))
        #expect(metrics.contains("\nswitchboard_balancer_ended_before_response_total 2\n"))
    }

    @Test func adminReportsListEveryNode() {
        var configuration = BalancerConfiguration()
        configuration.nodes = [BackendNode(host: "127.0.0.1", port: 9), BackendNode(host: "127.0.0.1", port: 10, weight: 2)]
        let router = NodeRouter(configuration: configuration)
        router.setMembers(configuration.nodes)
        #expect(router.pick(key: nil, excluding: []) != nil)
        let snapshot = router.snapshot()
        let json = String(buffer: AdminReport.nodesJSON(table: snapshot.table, counters: snapshot.counters, algorithm: .powerOfTwoChoices, now: .now()))
        #expect(json.contains("\"id\":\"127.0.0.1:9\""))
        #expect(json.contains("\"weight\":2"))
        #expect(json.contains("\"algorithm\":\"p2c\""))
        let metrics = String(buffer: AdminReport.metricsText(table: snapshot.table, counters: snapshot.counters, now: .now()))
        #expect(metrics.contains("switchboard_balancer_node_picks_total{node=\"127.0.0.1:10\"}"))
        let picks = metrics.split(separator: "\n").filter { $0.hasPrefix("switchboard_balancer_node_picks_total{") }
        #expect(picks.map { $0.split(separator: " ").last! }.sorted() == ["0", "1"])
    }

    /// A node id read from the registry is the registry writer's text: a quote or a line break in it must
    /// not end the label early, or end the line and start a metric of the writer's choosing.
    @Test func nodeIdsAreEscapedInMetricLabels() throws {
        var configuration = BalancerConfiguration()
        configuration.nodes = [BackendNode(host: "evil\"} 1\nfake_metric{a=\"\\", port: 9)]
        let router = NodeRouter(configuration: configuration)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: 9)
        #expect(router.setMembers(configuration.nodes, resolved: [configuration.nodes[0].id: address]).count == 1)
        let snapshot = router.snapshot()
        let metrics = String(buffer: AdminReport.metricsText(table: snapshot.table, counters: snapshot.counters, now: .now()))
        let lines = metrics.split(separator: "\n")
        #expect(!lines.contains { $0.hasPrefix("fake_metric") })
        let picks = lines.filter { $0.hasPrefix("switchboard_balancer_node_picks_total{") }
        #expect(picks == [#"switchboard_balancer_node_picks_total{node="evil\"} 1\nfake_metric{a=\"\\:9"} 0"#])
        #expect(AdminReport.labelValue("127.0.0.1:9") == "127.0.0.1:9")
    }
}

@Suite struct TunnelSweeperTests {
    @Test func closesOnlyTunnelsIdleForTheirTimeout() throws {
        let loop = EmbeddedEventLoop()
        var configuration = BalancerConfiguration()
        configuration.nodes = [BackendNode(host: "127.0.0.1", port: 9)]
        let router = NodeRouter(configuration: configuration)
        let sweeper = TunnelSweeper(eventLoop: loop, interval: .milliseconds(100))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var channels: [EmbeddedChannel] = []
        var links: [TunnelLink] = []
        for _ in 0..<2 {
            let channel = EmbeddedChannel(loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            let link = TunnelLink(
                node: configuration.nodes[0], router: router, acceptedAt: start, connectStarted: start, idleTimeout: .seconds(1),
                logger: Logger(label: "test"))
            link.startIdleTimer(client: channel, sweeper: sweeper)
            channels.append(channel)
            links.append(link)
        }
        links[1].lastActivity = start + .milliseconds(500)  // the second one moved a byte later
        #expect(sweeper.sweep(now: start + .milliseconds(900)) == 0)
        #expect(sweeper.sweep(now: start + .seconds(1)) == 1)
        #expect(!channels[0].isActive)
        #expect(channels[1].isActive)
        links[0].closed()
        #expect(sweeper.count == 1)
        #expect(sweeper.sweep(now: start + .milliseconds(1500)) == 1)
        #expect(!channels[1].isActive)
        #expect(TunnelSweeper.interval(for: .seconds(3600)) == .seconds(5))
        #expect(TunnelSweeper.interval(for: .milliseconds(200)) == .milliseconds(100))
        sweeper.stop()
    }
}
