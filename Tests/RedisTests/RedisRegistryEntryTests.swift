import NIOCore
import SwitchboardBroker
import SwitchboardCore
@testable import SwitchboardRedis
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
}
