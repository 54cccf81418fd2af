import Foundation
import Logging
import NIOCore
@testable import SwitchboardBench
import SwitchboardServer
import Testing

/// The pingpong scenario's pure parts: the closed loop's echo matching,
/// percentiles, /proc parsing, CPU lists and the result's JSON.
@Suite("pingpong building blocks")
struct PingPongUnitTests {
    @Test("an echo is matched to its send; duplicates, late and unexpected echoes are told apart")
    func echoMatching() {
        var loop = PingPongLoop()
        let first = loop.send(now: 1_000)
        #expect(first == 1)
        #expect(loop.isWaiting)
        var echo = loop.echo(seq: 2, now: 1_100)
        #expect(echo == .unexpected)
        echo = loop.echo(seq: 1, now: 1_500)
        #expect(echo == .matched(nanoseconds: 500))
        #expect(!loop.isWaiting)
        echo = loop.echo(seq: 1, now: 1_600)
        #expect(echo == .duplicate)
        let second = loop.send(now: 2_000)
        #expect(second == 2)
        // not back within 100 ns: given up, the loop sends 3, and 2's echo is late
        var expired = loop.expire(now: 2_050, limit: 100)
        #expect(!expired)
        expired = loop.expire(now: 2_101, limit: 100)
        #expect(expired)
        expired = loop.expire(now: 2_500, limit: 100)
        #expect(!expired)
        let third = loop.send(now: 2_200)
        #expect(third == 3)
        echo = loop.echo(seq: 2, now: 2_300)
        #expect(echo == .late)
        echo = loop.echo(seq: 3, now: 2_250)
        #expect(echo == .matched(nanoseconds: 50))
        echo = loop.echo(seq: 0, now: 2_400)
        #expect(echo == .duplicate)
        echo = loop.echo(seq: 9, now: 2_400)
        #expect(echo == .unexpected)
    }

    @Test("percentiles of a known distribution are within the histogram's 3 significant digits")
    func percentiles() {
        var histogram = LatencyHistogram()
        // 1 ms ... 10 ms in 1 µs steps, shuffled order must not matter
        let values = (1...10_000).map { Int64($0) * 1_000 + 1_000_000 - 1_000 }
        for value in values.shuffled() { histogram.record(nanoseconds: value) }
        #expect(histogram.count == 10_000)
        for (percentile, exact) in [(50.0, 5.999), (90.0, 9.999), (99.0, 10.899), (99.9, 10.989)] {
            let value = histogram.milliseconds(atPercentile: percentile)
            #expect(abs(value - exact) / exact < 0.002, "p\(percentile) = \(value), exact \(exact)")
        }
        #expect(histogram.milliseconds(atPercentile: 100) == 10.999)
        #expect(histogram.milliseconds(atPercentile: 0) == 1.0)
        #expect(abs(histogram.meanMilliseconds - 5.9995) < 1e-9)
        let summary = histogram.summary
        #expect(summary.p50 <= summary.p90 && summary.p90 <= summary.p99 && summary.p99 <= summary.p999 && summary.p999 <= summary.max)
        #expect(LatencyHistogram().milliseconds(atPercentile: 99) == 0)
    }

    @Test("utime + stime are read from /proc/PID/stat, also when the command name has spaces and parentheses")
    func procStat() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 1905 0 0 0 731 269 0 0 20 0 9 0 12345 1234567 890 18446744073709551615"
        #expect(ServerProcessWatch.cpuTicks(stat: stat) == 1_000)
        #expect(ServerProcessWatch.cpuTicks(stat: "4242 (x) S 1 2 3") == nil)
        #expect(ServerProcessWatch.cpuTicks(stat: "no parenthesis at all") == nil)
        #expect(ServerProcessWatch.cpuTicks(stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 -5 3 0") == nil)
        // this process's own stat parses, and CPU only grows
        let pid = getpid()
        let before = ServerProcessWatch.cpuTicks(pid: pid)
        #expect(before != nil)
        var x: UInt64 = 1
        for i in 0..<20_000_000 { x = x &* 6_364_136_223_846_793_005 &+ UInt64(i) }
        #expect(x != 0)
        #expect((ServerProcessWatch.cpuTicks(pid: pid) ?? -1) >= (before ?? 0))
    }

    @Test("listening sockets are found by port in /proc/net/tcp text")
    func procNetTCP() {
        let table = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
               1: 0100007F:1F40 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1
               2: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 100 0 0 10 0
            """
        #expect(ServerDiscovery.listeningInodes(table: table, ports: [8000]) == [111])
        #expect(ServerDiscovery.listeningInodes(table: table, ports: [8000, 8001]) == [111, 333])
        #expect(ServerDiscovery.listeningInodes(table: table, ports: [9]) == [])
        #expect(ServerDiscovery.socketInode("socket:[12345]") == 12_345)
        #expect(ServerDiscovery.socketInode("pipe:[12345]") == nil)
        #expect(ServerDiscovery.socketInode("socket:[x]") == nil)
    }

    @Test("CPU lists parse like taskset -c", arguments: [
        ("1", [1]), ("0,2", [0, 2]), ("0-3,6", [0, 1, 2, 3, 6]), ("3,1-2,1", [1, 2, 3]), ("1023", [1023]),
    ])
    func cpuLists(_ text: String, _ cpus: [Int]) {
        #expect(CPUAffinity.parse(text) == cpus)
    }

    @Test("bad CPU lists are refused", arguments: ["", "a", "1,", "-1", "3-1", "1024", "0-99999", "1 ,2", "1--2", "0x1"])
    func badCPULists(_ text: String) {
        #expect(CPUAffinity.parse(text) == nil)
    }

    @Test("pinning sets the mask of every thread, and restoring it works")
    func pinning() throws {
        let original = try #require(CPUAffinity.current())
        let first = try #require(original.first)
        try CPUAffinity.pin(to: [first])
        #expect(CPUAffinity.current() == [first])
        // a thread started now inherits the mask
        // (Waited for by a semaphore, not polled: the whole test process, other tests too, runs on
        // one CPU until the mask is restored.)
        let seen = TestBox<[Int]?>(nil)
        let recorded = DispatchSemaphore(value: 0)
        let thread = Thread {
            seen.set(CPUAffinity.current())
            recorded.signal()
        }
        thread.start()
        _ = recorded.wait(timeout: .now() + 10)
        try CPUAffinity.pin(to: original)
        #expect(seen.get() == [first])
        #expect(CPUAffinity.current() == original)
    }

    @Test("the result reports round trips/s over the window and server CPU per round trip, in JSON too")
    func resultJSON() throws {
        var counters = BenchCounters(seriesEpochNanoseconds: 0)
        counters.attempted = 10
        counters.connected = 10
        counters.subscribed = 10
        counters.published = 2_010
        counters.delivered = 2_008
        counters.roundTripTimeouts = 1
        counters.lateEchoes = 1
        counters.measuredRoundTrips = 2_000
        counters.measureStartNanoseconds = 5_000_000_000
        counters.measureEndNanoseconds = 9_000_000_000
        for i in 0..<2_008 { counters.latency.record(nanoseconds: Int64(100_000 + i * 1_000)) }
        var c = BenchConfiguration(scenario: .pingpong, urls: [try BenchURL("ws://127.0.0.1:1/ws")])
        c.cpus = [1]
        let servers = [
            ServerSample(pid: 7, rssBeforeKB: 1, cpuSeconds: 0.03), ServerSample(pid: 8, rssBeforeKB: 1, cpuSeconds: 0.01),
        ]
        let result = BenchResult(
            configuration: c, counters: counters, servers: servers, processes: 1, threads: 2, startedAt: 0,
            elapsedSeconds: 6, timedOut: false, notes: []
        )
        let p = try #require(result.pingPong)
        #expect(p.roundTripsPerSecond == 500)
        #expect(p.lost == 1)  // 2,010 sent - 2,008 matched - 1 timed out
        #expect(abs((p.serverCPUMicrosecondsPerRoundTrip ?? 0) - 20) < 1e-9)  // 0.04 s / 2,000
        #expect(result.publications == nil)
        #expect(result.memory == nil)

        let object = try #require(try JSONSerialization.jsonObject(with: Data(Bench.json(result).utf8)) as? [String: Any])
        #expect(object["scenario"] as? String == "pingpong")
        #expect(object["load_cpus"] as? [Int] == [1])
        let json = try #require(object["pingpong"] as? [String: Any])
        #expect(json["round_trips_per_s"] as? Double == 500)
        #expect(json["measured_round_trips"] as? Int == 2_000)
        #expect(json["round_trips"] as? Int == 2_008)
        #expect(json["sent"] as? Int == 2_010)
        #expect(json["lost"] as? Int == 1)
        #expect(json["server_cpu_s"] as? Double == 0.04)
        let latency = try #require(json["latency_ms"] as? [String: Any])
        #expect(latency["count"] as? Int == 2_008)
        let decoded = try JSONDecoder().decode(BenchResult.self, from: Data(Bench.json(result).utf8))
        #expect(decoded.pingPong == result.pingPong)
        #expect(ResultTable.render(result).contains("round trips/s  500 (2000 in 4.00 s, 10 loops)"))
    }
}

/// A lock-protected box for the thread test.
final class TestBox<Value: Sendable>: @unchecked Sendable {  // a plain lock guards `value`
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func get() -> Value { self.lock.withLock { self.value } }
    func set(_ value: Value) { self.lock.withLock { self.value = value } }
}

/// pingpong against a node on real loopback sockets.
@Suite("pingpong against a node", .serialized, .timeLimit(.minutes(5)))
struct PingPongScenarioTests {
    static func configuration(port: Int) throws -> BenchConfiguration {
        var c = BenchConfiguration(scenario: .pingpong, urls: [try BenchURL("ws://127.0.0.1:\(port)/ws")])
        c.progress = false
        c.timeout = 30
        c.idleTimeout = 3
        return c
    }

    @Test("every loop's echoes come back matched to their sends, none lost, for 2 s")
    func ownChannels() async throws {
        try await BenchScenarioTests.withNode { port in
            var c = try Self.configuration(port: port)
            c.connections = 50
            c.duration = 2
            c.serverPIDs = [getpid()]  // the node runs in this process
            let result = try await Bench.run(c)
            let p = try #require(result.pingPong)
            #expect(result.connections.established == 50)
            #expect(p.loops == 50)
            #expect(p.measuredRoundTrips > 50)
            #expect(p.roundTripsPerSecond > 0)
            #expect(p.measuredSeconds >= 1.9 && p.measuredSeconds < 10)
            #expect(p.sent >= p.measuredRoundTrips)
            #expect(p.roundTrips == p.sent)  // every send came back, matched
            #expect(p.lost == 0 && p.timeouts == 0)
            #expect(p.duplicates == 0 && p.late == 0 && p.unexpected == 0 && p.foreign == 0)
            #expect(p.offsetGaps == 0 && p.publishErrors == 0, "\(result.errorSamples)")
            #expect(p.latencyMs.count == UInt64(p.roundTrips))
            #expect(p.latencyMs.min > 0 && p.latencyMs.p50 <= p.latencyMs.p99 && p.latencyMs.p99 <= p.latencyMs.max)
            #expect((p.serverCPUSeconds ?? 0) > 0)
            #expect((p.serverCPUMicrosecondsPerRoundTrip ?? 0) > 0)
            #expect(result.errors == 0)
            #expect(!result.timedOut)
        }
    }

    @Test("on a shared channel each loop still waits for its own echo; --max-round-trips bounds the run")
    func sharedChannelAndBound() async throws {
        try await BenchScenarioTests.withNode { port in
            var c = try Self.configuration(port: port)
            c.connections = 10
            c.channels = 1
            c.duration = 20
            c.maxRoundTrips = 400
            let result = try await Bench.run(c)
            let p = try #require(result.pingPong)
            #expect(p.sent == 400)
            #expect(p.roundTrips == 400)
            #expect(p.lost == 0 && p.duplicates == 0 && p.late == 0 && p.unexpected == 0)
            #expect(p.foreign > 0 && p.foreign <= 400 * 9)  // publications reached the other loops too
            #expect(p.measuredSeconds < 15)  // stopped by the count, not the duration
        }
    }

    @Test("pingpong refuses worker processes and bad bounds")
    func validation() throws {
        var c = BenchConfiguration(scenario: .pingpong, urls: [try BenchURL("ws://127.0.0.1:1/ws")])
        c.processes = .fixed(2)
        #expect(throws: BenchError.self) { try c.validated() }
        c.processes = .fixed(1)
        c.duration = 0
        #expect(throws: BenchError.self) { try c.validated() }
        c.duration = 1
        c.maxRoundTrips = 0
        #expect(throws: BenchError.self) { try c.validated() }
        c.maxRoundTrips = 1
        c.cpus = [5000]
        #expect(throws: BenchError.self) { try c.validated() }
        c.cpus = [0]
        #expect(try c.validated().channelCount == 1000)  // one channel per loop by default
    }
}
