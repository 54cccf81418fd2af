import Foundation
import Logging
import NIOCore
@testable import SwitchboardBench
import SwitchboardServer
import SwitchboardCore
import Crypto
import Testing

/// Every scenario, small, against an in-process node over real loopback sockets.
@Suite("bench scenarios against a node", .serialized, .timeLimit(.minutes(10)))
struct BenchScenarioTests {
    static func withNode(
        _ configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: (Int) async throws -> Void
    ) async throws {
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.apiKey = "test-key"
        configuration.logLevel = "error"
        // As compare-peers.sh starts it: a benchmark connection sends far more than the default 100
        // commands/s (pingpong on a fast machine: about 180 per connection), which would be refused 111.
        configuration.limits.commandsPerSecond = 1_000_000
        configuration.limits.commandBurst = 1_000_000
        configure(&configuration)
        let node = try SwitchboardNode(configuration: configuration, logger: Logger(label: "bench-test"))
        let port = try await node.start()
        do {
            try await body(port)
        } catch {
            await node.stop()
            throw error
        }
        await node.stop()
    }

    static func configuration(_ scenario: BenchScenario, port: Int) throws -> BenchConfiguration {
        var c = BenchConfiguration(scenario: scenario, urls: [try BenchURL("ws://127.0.0.1:\(port)/ws")])
        c.progress = false
        c.timeout = 20
        c.hold = 0.2
        c.idleTimeout = 10  // a run that passes ends once everything arrived; 1 s cut a paused one short as "lost"
        c.warmupTimeout = 5
        return c
    }

    @Test("connect: every connection is established and subscribed")
    func connect() async throws {
        try await Self.withNode { port in
            var c = try Self.configuration(.connect, port: port)
            c.connections = 50
            let result = try await Bench.run(c)
            #expect(result.connections.attempted == 50)
            #expect(result.connections.established == 50)
            #expect(result.connections.failed == 0)
            #expect(result.connections.dropped == 0)
            #expect(result.connections.subscribed == 50)
            #expect(result.connections.handshakesPerSecond > 0)
            let h = result.connections.handshakeMs
            #expect(h.count == 50)
            #expect(h.min <= h.p50 && h.p50 <= h.p99 && h.p99 <= h.max)
            #expect(result.series.reduce(0) { $0 + $1.established } == 50)
            #expect(!result.timedOut)
        }
    }

    @Test("connect --token-file: connection i sends token i mod N (a bad line fails exactly its connections)")
    func connectWithTokenFile() async throws {
        let secret = "bench-test-secret-0123456789abcdef0123456789"
        func token(_ user: String) -> String {
            let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
            let payload = Base64URL.encode(Array(#"{"sub":"\#(user)","exp":\#(Int(Date().timeIntervalSince1970) + 600)}"#.utf8))
            let mac = HMAC<SHA256>.authenticationCode(for: Array((header + "." + payload).utf8), using: SymmetricKey(data: Array(secret.utf8)))
            return header + "." + payload + "." + Base64URL.encode(Array(mac))
        }
        try await Self.withNode({ $0.tokenSecret = secret }) { port in
            var c = try Self.configuration(.connect, port: port)
            c.subscribe = false
            c.connections = 8
            c.tokens = [token("u0"), token("u1"), "not-a-token", token("u3")]
            let result = try await Bench.run(c)
            #expect(result.connections.attempted == 8)
            #expect(result.connections.established == 6)
            #expect(result.connections.failed == 2)
        }
    }

    @Test("idle: the server's RSS is sampled and divided by the connections")
    func idle() async throws {
        try await Self.withNode { port in
            var c = try Self.configuration(.idle, port: port)
            c.connections = 50
            c.serverPIDs = [getpid()]  // the node runs in this process
            let result = try await Bench.run(c)
            #expect(result.connections.established == 50)
            #expect(result.connections.subscribed == 50)
            let server = try #require(result.servers.first)
            #expect(server.rssBeforeKB > 0)
            #expect(server.rssOpenKB != nil && server.rssAfterCloseKB != nil)
            let memory = try #require(result.memory)
            #expect(memory.connections == 50)
            #expect(memory.basis == "rss_open - rss_before")
        }
    }

    @Test("server pings are answered, so quiet connections stay open")
    func pings() async throws {
        try await Self.withNode({ $0.pingInterval = 0.5; $0.pongTimeout = 1.5 }) { port in
            var c = try Self.configuration(.connect, port: port)
            c.connections = 10
            c.hold = 5.2  // pings go out on the node's 1 s sweep; a missing pong would drop the connection within 2.5 s
            let result = try await Bench.run(c)
            #expect(result.connections.established == 10)
            #expect(result.connections.pings >= 10)
            #expect(result.connections.dropped == 0)
            #expect(result.errors == 0)
        }
    }

    @Test("fanout: every publication reaches every subscriber, in order, without gaps")
    func fanout() async throws {
        try await Self.withNode { port in
            var c = try Self.configuration(.fanout, port: port)
            c.connections = 50
            c.messages = 20
            c.messageRate = 200
            c.payloadSize = 100
            let result = try await Bench.run(c)
            let p = try #require(result.publications)
            #expect(result.connections.established == 50)
            #expect(p.published == 20)
            #expect(p.expected == 50 * 20)
            #expect(p.delivered == 50 * 20)
            #expect(p.lost == 0)
            #expect(p.outOfOrder == 0)
            #expect(p.gaps == 0)
            #expect(p.unwarmed == 0)
            #expect(p.unparsed == 0)
            #expect(p.publishErrors == 0)
            #expect(p.deliveriesPerSecond > 0)
            #expect(p.latencyMs.count == 1000)
            #expect(p.latencyMs.p50 <= p.latencyMs.p99 && p.latencyMs.p99 <= p.latencyMs.max)
        }
    }

    @Test("fanout over several channels with two publishers through the HTTP API")
    func fanoutThroughAPI() async throws {
        try await Self.withNode { port in
            var c = try Self.configuration(.fanout, port: port)
            c.connections = 30
            c.channels = 3
            c.messages = 21
            c.messageRate = 300
            c.publishers = 2
            c.publishVia = .api
            c.apiKey = "test-key"
            let result = try await Bench.run(c)
            let p = try #require(result.publications)
            #expect(p.expected == 30 * 7)  // each subscriber's channel gets 21 / 3 messages
            #expect(p.delivered == p.expected)
            #expect(p.lost == 0 && p.gaps == 0 && p.outOfOrder == 0)
            #expect(p.publishErrors == 0)
            #expect(p.publishAcks >= 21)
        }
    }

    @Test("latency: percentiles are ordered p50 <= p90 <= p99 <= p99.9 <= max")
    func latency() async throws {
        try await Self.withNode { port in
            var c = try Self.configuration(.latency, port: port)
            c.connections = 20
            c.messages = 50
            c.messageRate = 500
            let result = try await Bench.run(c)
            let p = try #require(result.publications)
            #expect(p.delivered == 20 * 50)
            let l = p.latencyMs
            #expect(l.count == 1000)
            #expect(l.min > 0)
            #expect(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max)
            #expect(result.series.contains { $0.latencyMaxMs != nil })
        }
    }

    @Test("cross-node: publishers and subscribers on different URLs")
    func crossNode() async throws {
        try await Self.withNode { port in
            // one node under two names stands in for two nodes sharing a broker
            var c = try Self.configuration(.crossNode, port: port)
            c.urls = [try BenchURL("ws://localhost:\(port)/ws"), try BenchURL("ws://127.0.0.1:\(port)/ws")]
            c.connections = 20
            c.messages = 10
            let result = try await Bench.run(c)
            #expect(result.publisherURLs == ["ws://localhost:\(port)/ws"])
            #expect(result.urls == ["ws://127.0.0.1:\(port)/ws"])
            #expect(result.publications?.delivered == 200)
        }
    }

    @Test("--json writes every figure, --html a self-contained page")
    func reports() async throws {
        try await Self.withNode { port in
            var c = try Self.configuration(.fanout, port: port)
            c.connections = 10
            c.messages = 10
            let result = try await Bench.run(c)
            let directory = FileManager.default.temporaryDirectory
            let json = directory.appendingPathComponent("bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json")
            let html = directory.appendingPathComponent("bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).html")
            defer {
                try? FileManager.default.removeItem(at: json)
                try? FileManager.default.removeItem(at: html)
            }
            try Bench.writeJSON(result, to: json.path)
            try Bench.writeHTML(result, to: html.path)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
            #expect(object["scenario"] as? String == "fanout")
            let connections = try #require(object["connections"] as? [String: Any])
            #expect(connections["established"] as? Int == 10)
            #expect(connections["handshakes_per_s"] != nil)
            let publications = try #require(object["publications"] as? [String: Any])
            #expect(publications["delivered"] as? Int == 100)
            #expect(publications["lost"] as? Int == 0)
            #expect(publications["deliveries_per_s"] != nil)
            let latency = try #require(publications["latency_ms"] as? [String: Any])
            for key in ["p50", "p90", "p99", "p99.9", "max"] { #expect(latency[key] is Double, "latency_ms.\(key)") }
            #expect(object["series"] is [Any])
            #expect((object["latency_histogram"] as? [String: Any])?["buckets"] is [Any])
            // the JSON reads back into a result
            let decoded = try JSONDecoder().decode(BenchResult.self, from: Data(contentsOf: json))
            #expect(decoded.publications?.delivered == 100)
            #expect(decoded.latencyHistogram.count == result.latencyHistogram.count)

            let page = try String(contentsOf: html, encoding: .utf8)
            #expect(page.contains("<svg"))
            #expect(page.contains("latency distribution"))
            #expect(!page.contains("<script"))
            #expect(!page.contains("src="))
            #expect(!page.contains("href="))
            #expect(!page.contains("@import"))
        }
    }
}

@Suite("bench configuration and building blocks")
struct BenchUnitTests {
    @Test("non-loopback URLs and source addresses are refused", arguments: [
        "ws://10.0.0.1:8000/ws", "ws://example.com/ws", "ws://192.168.1.2/ws", "ws://[2001:db8::1]:80/ws", "ws://0.0.0.0:8000/ws",
    ])
    func refusesNonLoopback(_ url: String) {
        #expect(throws: BenchError.self) { try BenchURL(url) }
        do {
            _ = try BenchURL(url)
        } catch {
            #expect(error.code == .notLoopback)
        }
    }

    @Test("loopback URLs parse", arguments: [
        ("ws://127.0.0.1:8000/ws", "127.0.0.1", 8000, "/ws"), ("ws://localhost:9/x?y=1", "localhost", 9, "/x?y=1"),
        ("ws://[::1]:81", "::1", 81, "/ws"), ("ws://127.3.4.5", "127.3.4.5", 80, "/ws"),
    ])
    func parsesLoopback(_ text: String, _ host: String, _ port: Int, _ path: String) throws {
        let url = try BenchURL(text)
        #expect(url.host == host && url.port == port && url.path == path)
    }

    @Test("a non-loopback source address, wss and bad values are refused")
    func refusesBadConfiguration() throws {
        var c = BenchConfiguration(scenario: .connect, urls: [try BenchURL("ws://127.0.0.1:1/ws")])
        c.sourceAddress = "10.0.0.2"
        #expect(throws: BenchError.self) { try c.validated() }
        #expect(throws: BenchError.self) { try BenchURL("wss://127.0.0.1/ws") }
        var big = BenchConfiguration(scenario: .idle, urls: [try BenchURL("ws://127.0.0.1:1/ws")])
        big.connections = 30_000
        do {
            _ = try big.validated()
            Issue.record("30,000 sockets in one process should be refused")
        } catch {
            #expect(error.code == .tooManySockets)
        }
        big.processes = .auto
        let auto = try big.validated()
        #expect(auto.processCount == 2)
        var api = BenchConfiguration(scenario: .fanout, urls: [try BenchURL("ws://127.0.0.1:1/ws")])
        api.publishVia = .api
        #expect(throws: BenchError.self) { try api.validated() }
        let cross = BenchConfiguration(scenario: .crossNode, urls: [try BenchURL("ws://127.0.0.1:1/ws")])
        #expect(throws: BenchError.self) { try cross.validated() }
    }

    @Test("histograms merge exactly, also through their JSON form")
    func histogramMerge() throws {
        var all = LatencyHistogram()
        var a = LatencyHistogram()
        var b = LatencyHistogram()
        for i in 0..<10_000 {
            let ns = Int64((i * 7919) % 50_000) * 1_000 + 1_234
            all.record(nanoseconds: ns)
            if i % 3 == 0 { a.record(nanoseconds: ns) } else { b.record(nanoseconds: ns) }
        }
        let decoded = try JSONDecoder().decode(LatencyHistogram.self, from: JSONEncoder().encode(b))
        a.merge(decoded)
        #expect(a.count == all.count)
        #expect(a.summary == all.summary)
        for p in [1.0, 25, 50, 75, 90, 99, 99.9, 99.99] {
            #expect(a.milliseconds(atPercentile: p) == all.milliseconds(atPercentile: p))
        }
        #expect(a.buckets.map(\.count) == all.buckets.map(\.count))
    }

    @Test("the frame scanner splits objects and finds integers by key")
    func frameScanner() {
        let frame = Array(#"{"channel":"a","pub":{"offset":41,"data":{"seq":7,"ts":-5,"pad":"seq"}}}"# .utf8)
            + Array("\n{}\n  \n".utf8) + Array(#"{"id":2,"result":{}}"#.utf8)
        var lines: [String] = []
        frame.withUnsafeBytes { bytes in
            FrameScanner.forEachLine(bytes) { lines.append(String(decoding: $0, as: UTF8.self)) }
        }
        #expect(lines.count == 3)
        #expect(lines[1] == "{}")
        Array(lines[0].utf8).withUnsafeBytes { bytes in
            #expect(FrameScanner.integer(bytes, key: #""offset""#) == 41)
            #expect(FrameScanner.integer(bytes, key: #""seq""#) == 7)
            #expect(FrameScanner.integer(bytes, key: #""ts""#) == -5)
            #expect(FrameScanner.integer(bytes, key: #""id""#) == nil)
        }
    }

    @Test("payloads are padded to the requested size and carry seq and ts")
    func payload() throws {
        var buffer = ByteBufferAllocator().buffer(capacity: 256)
        buffer.writeBenchPayload(seq: 12, timestamp: 1_700_000_000_000_000_000, source: nil, size: 100)
        #expect(buffer.readableBytes == 100)
        let text = String(buffer: buffer)
        #expect(text.hasPrefix(#"{"seq":12,"ts":1700000000000000000,"pad":"xx"#))
        #expect(try JSONSerialization.jsonObject(with: Data(text.utf8)) is [String: Any])
        var small = ByteBufferAllocator().buffer(capacity: 64)
        small.writeBenchPayload(seq: 0, timestamp: 5, source: 3, size: 0)
        #expect(String(buffer: small) == #"{"seq":0,"ts":5,"src":3}"#)
    }
}
