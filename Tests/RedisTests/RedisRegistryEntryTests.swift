import NIOCore
import SwitchboardBroker
import SwitchboardCore
@_spi(Harness) @testable import SwitchboardRedis
import Testing

@Suite("Redis registry entries")
struct RedisRegistryEntryTests {
    @Test("a node's load figures go out as written and come back range-checked; non-finite ones are left out")
    func loadFigures() throws {
        let node = NodeInfo(id: "n1", name: "a", address: "127.0.0.1:1", cpu: 0.42, loopLag: 0.013)
        var buffer = ByteBuffer()
        buffer.writeJSON(RedisBroker.nodeJSON(node, at: 1000))
        let parsed = try JSONParser().parse(buffer.readableBytesView)
        let read = try #require(RedisBroker.node(fromJSON: parsed))
        #expect(read.cpu == 0.42 && read.loopLag == 0.013)
        let unmeasured = RedisBroker.nodeJSON(NodeInfo(id: "n1", name: "a", address: "x", cpu: .nan, loopLag: .infinity), at: 1000)
        #expect(unmeasured["cpu"] == nil && unmeasured["lag"] == nil)
        let odd = try JSONParser().parse(Array(#"{"id":"n1","cpu":7,"lag":-2}"#.utf8))
        let clamped = try #require(RedisBroker.node(fromJSON: odd))
        #expect(clamped.cpu == 1 && clamped.loopLag == 0)
        let junk = try JSONParser().parse(Array(#"{"id":"n1","cpu":"busy","lag":1e999}"#.utf8))
        let none = try #require(RedisBroker.node(fromJSON: junk))
        #expect(none.cpu == nil && none.loopLag == nil)
    }

    @Test("whatever wrote the registry, its numbers come back in range: counts that sum without overflow, finite times")
    func hostileEntries() throws {
        let hostile = try JSONParser().parse(Array(
            #"{"id":"n1","connections":9223372036854775807,"subscriptions":-5,"channels":1e400,"uptime":1e400,"weight":100000,"maxConnections":-1,"at":-1e300}"#.utf8))
        let node = try #require(RedisBroker.node(fromJSON: hostile))
        #expect(node.connections == 1_000_000_000 && node.subscriptions == 0 && node.channels == 0)
        #expect(node.uptime == 0 && node.weight == 100 && node.maxConnections == 0 && node.announcedAt == 0)
        #expect([node, node, node].reduce(0) { $0 + $1.connections } == 3_000_000_000)
    }

    @Test("offsets a node never writes (above Int64.max) are refused where they are read: a stream id, a publication message")
    func offsetsAboveInt64() {
        #expect(RedisBroker.offset(ofStreamID: "9223372036854775807-0") == 9_223_372_036_854_775_807)
        #expect(RedisBroker.offset(ofStreamID: "9223372036854775808-0") == nil)
        #expect(RedisBroker.offset(ofStreamID: "18446744073709551615-0") == nil)
        for (offset, accepted) in [("9223372036854775807", true), ("18446744073709551615", false)] {
            var payload = ByteBuffer(string: "p\(offset) ep 1 0 ")
            payload.writeString("\"x\"")
            #expect((RedisBroker.decodeChannelMessage("c", payload) != nil) == accepted, "\(offset)")
        }
    }

    @Test("a forwarded SSE command's result whose status is no HTTP status is dropped (a negative one trapped the node answering it)")
    func controlResultStatus() {
        func decode(_ status: String) -> ControlMessage? {
            RedisBroker.decodeControl(ByteBuffer(string: #"{"t":"cmdResult","corr":7,"status":\#(status),"accepted":1}"#))
        }
        guard case .sessionCommandsResult(let correlation, let status, _, _)? = decode("202") else {
            Issue.record("a 202 result was not read")
            return
        }
        #expect(correlation == 7 && status == 202)
        for bad in ["-1", "0", "99", "600", "9223372036854775807", "-9223372036854775808"] {
            #expect(decode(bad) == nil, "\(bad)")
        }
    }
}
