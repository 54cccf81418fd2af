import TestProcesses
import Logging
import NIOCore
import NIOPosix
import RedisClient
import RESP
import SwitchboardBroker
import SwitchboardCore
@_spi(Harness) import SwitchboardRedis
import Testing

/// The Redis side of `limits.connectionsPerUser`: the key, its fields and TTL, and two brokers
/// (two nodes) sharing one count.
@Suite("RedisBroker connections per user", .serialized, .timeLimit(.minutes(2)))
struct RedisUserConnectionTests {
    @Test("one hash-tagged key per user, field = connection, value = node, with a TTL; gone with its last connection; two nodes share the cap; Redis down fails the acquire")
    func keyShapeAndTwoNodes() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup { group in
            func broker(_ id: String) -> RedisBroker {
                RedisBroker(configuration: RedisConfiguration(port: redis.port), nodeID: id, eventLoop: group.next(), logger: Logger(label: "test"))
            }
            let a = broker("node-a")
            let b = broker("node-b")
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: Logger(label: "admin"))
            for node in [a, b] { try await node.announce(NodeInfo(id: node.nodeID, name: node.nodeID, address: "127.0.0.1:1"), ttl: 30).get() }

            #expect(try await a.acquireUserConnection(user: "alice", connection: "a-1", node: "node-a", limit: 2).get())
            #expect(try await b.acquireUserConnection(user: "alice", connection: "b-1", node: "node-b", limit: 2).get())
            #expect(try await !b.acquireUserConnection(user: "alice", connection: "b-2", node: "node-b", limit: 2).get())
            let fields = try await admin.send("HGETALL", "sb:u:{alice}").get()
            var pairs: [String: String] = [:]
            if let flat = fields.array {
                for i in stride(from: 0, to: flat.count - 1, by: 2) { pairs[flat[i].string ?? ""] = flat[i + 1].string ?? "" }
            } else if case .map(let map) = fields.value {
                for entry in map { pairs[entry.key.string ?? ""] = entry.value.string ?? "" }
            }
            #expect(pairs == ["a-1": "node-a", "b-1": "node-b"])
            let ttl = try await admin.send("TTL", "sb:u:{alice}").get().int64 ?? -3
            #expect(ttl > 0 && ttl <= RedisBroker.userConnectionsTTL)

            // Node b leaves the registry (a clean stop): its connection stops counting at a's next acquire.
            try await b.removeNode(id: "node-b").get()
            #expect(try await a.acquireUserConnection(user: "alice", connection: "a-2", node: "node-a", limit: 2).get())
            #expect(try await admin.send("HEXISTS", "sb:u:{alice}", "b-1").get().int64 == 0, "the removed node's field stayed")

            for connection in ["a-1", "a-2", "a-2"] { try await a.releaseUserConnection(user: "alice", connection: connection).get() }
            #expect(try await admin.send("EXISTS", "sb:u:{alice}").get().int64 == 0, "the hash outlived its last connection")

            redis.kill()
            await #expect(throws: (any Error).self) {
                _ = try await a.acquireUserConnection(user: "alice", connection: "a-3", node: "node-a", limit: 2).get()
            }
            _ = try? await admin.close().get()
            for node in [a, b] { _ = try? await node.shutdown().get() }
        }
    }

    @Test("a node's copy of the live nodes never drops or ignores a node that joined after the copy was read")
    func nodeJoinedAfterTheCopy() async throws {
        let redis = try RedisServerProcess()
        defer { redis.kill() }
        try await withEventLoopGroup { group in
            func broker(_ id: String) -> RedisBroker {
                RedisBroker(configuration: RedisConfiguration(port: redis.port), nodeID: id, eventLoop: group.next(), logger: Logger(label: "test"))
            }
            let a = broker("node-a")
            let c = broker("node-c")
            let admin = RedisClient(configuration: RedisConfiguration(port: redis.port), eventLoop: group.next(), logger: Logger(label: "admin"))
            try await a.announce(NodeInfo(id: "node-a", name: "a", address: "127.0.0.1:1"), ttl: 30).get()
            // a reads the registry now (only itself) and keeps the copy.
            #expect(try await a.acquireUserConnection(user: "alice", connection: "a-1", node: "node-a", limit: 3).get())
            try await c.announce(NodeInfo(id: "node-c", name: "c", address: "127.0.0.1:2"), ttl: 30).get()
            #expect(try await c.acquireUserConnection(user: "alice", connection: "c-1", node: "node-c", limit: 3).get())
            // Within the copy's age: a sees a connection of a node its copy does not list, rereads, counts it.
            #expect(try await a.acquireUserConnection(user: "alice", connection: "a-2", node: "node-a", limit: 3).get())
            #expect(try await !a.acquireUserConnection(user: "alice", connection: "a-3", node: "node-a", limit: 3).get())
            #expect(try await admin.send("HLEN", "sb:u:{alice}").get().int64 == 3, "a dropped node c's connection")
            // A refusal rests on a fresh read: node c gone from the registry no longer counts.
            try await c.removeNode(id: "node-c").get()
            #expect(try await a.acquireUserConnection(user: "alice", connection: "a-3", node: "node-a", limit: 3).get())
            #expect(try await admin.send("HEXISTS", "sb:u:{alice}", "c-1").get().int64 == 0)
            _ = try? await admin.close().get()
            for node in [a, c] { _ = try? await node.shutdown().get() }
        }
    }
}
