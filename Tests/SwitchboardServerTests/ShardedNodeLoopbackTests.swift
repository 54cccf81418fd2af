import Foundation
import NIOCore
import Logging
import NIOPosix
import SwitchboardBroker
import SwitchboardCore
@testable import SwitchboardServer
import Testing

/// A node with four event loops (four hub shards) over real loopback sockets:
/// channels on every shard, subscribers and publishers on every loop.
@Suite("Sharded node over loopback", .timeLimit(.minutes(3)))
struct ShardedNodeLoopbackTests {
    static let loops = 4

    /// Two channel names owned by each shard.
    static let channels: [String] = (0..<Self.loops).flatMap { shard in
        (0..<1_000).lazy.map { "shard:c\($0)" }.filter { ChannelShard.index(of: $0, count: Self.loops) == shard }.prefix(2)
    }

    /// One connected WebSocket client and what it has received.
    struct Client {
        var socket: LoopbackClient
        var id = ""
        /// Offsets received per channel, in arrival order.
        var offsets: [String: [Int]] = [:]
        var epochs: [String: String] = [:]
        /// Replies by command id.
        var replies: [Int: [String: Any]] = [:]

        static func connect(port: Int, group: any EventLoopGroup) async throws -> Client {
            var client = Client(socket: try await LoopbackClient.connect(port: port, group: group))
            #expect(try await client.socket.upgrade() == 101)
            try await client.socket.send(TestFrames.text(#"{"id":1,"connect":{}}"#))
            try await client.readUntil { $0.replies[1] != nil }
            client.id = ((client.replies[1]?["result"] as? [String: Any])?["client"] as? String) ?? ""
            return client
        }

        func send(_ json: String) async throws {
            try await self.socket.send(TestFrames.text(json))
        }

        /// Reads messages (a frame may hold several, one per line) until `done`; bounded by the
        /// socket's read deadline.
        mutating func readUntil(_ done: (Client) -> Bool) async throws {
            while !done(self) {
                guard let text = try await self.socket.readMessage() else {
                    Issue.record("connection closed")
                    return
                }
                for line in text.split(separator: "\n") {
                    guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
                    if let id = object["id"] as? Int {
                        self.replies[id] = object
                    } else if let channel = object["channel"] as? String, let pub = object["pub"] as? [String: Any],
                        let offset = pub["offset"] as? Int
                    {
                        self.offsets[channel, default: []].append(offset)
                    }
                }
            }
        }

        /// The loop index in the client id (`<node>-<loop>-<n>`).
        var loop: Int? {
            let parts = self.id.split(separator: "-")
            return parts.count >= 3 ? Int(parts[parts.count - 2]) : nil
        }
    }

    /// `unshardedBroker`: the broker keeps every channel on the first loop (as a broker that is not
    /// sharded by the hub's rule would), so its events reach the other hub shards by a hop.
    @Test(
        "every subscriber on every loop gets every publication of channels on every shard once, in order; recovery works",
        arguments: [false, true])
    func everyShard(unshardedBroker: Bool) async throws {
        #expect(Set(Self.channels.map { ChannelShard.index(of: $0, count: Self.loops) }).count == Self.loops)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        // The broker lends the node a backlog to count deliveries handed between loops in (a network
        // broker reads no more while it is over its limit): it must come back to zero.
        let backlog = DeliveryBacklog()
        var configuration = ServerConfiguration()
        configuration.port = 0
        configuration.apiKey = "test-key"
        configuration.eventLoopThreads = Self.loops
        let node = try SwitchboardNode(configuration: configuration, logger: Logger(label: "test")) { loops, _ in
            MemoryBroker(eventLoops: unshardedBroker ? [loops[0]] : loops, deliveryBacklog: backlog)
        }
        let port = try await node.start()
        // The kernel spreads connections over the loops' listeners by their addresses: connect until
        // every loop has a client (subscribers and publishers on every one), keeping six or more.
        var clients: [Client] = []
        for _ in 0..<64 where clients.count < 6 || Set(clients.compactMap(\.loop)) != Set(0..<Self.loops) {
            let client = try await Client.connect(port: port, group: group)
            if clients.count < 6 || !clients.contains(where: { $0.loop == client.loop }) {
                clients.append(client)
            } else {
                try await client.socket.channel.close()
            }
        }
        #expect(Set(clients.compactMap(\.loop)) == Set(0..<Self.loops))

        // Everyone subscribes to every channel.
        for i in clients.indices {
            for (n, channel) in Self.channels.enumerated() {
                try await clients[i].send(#"{"id":\#(10 + n),"subscribe":{"channel":"\#(channel)"}}"#)
            }
            try await clients[i].readUntil { client in (0..<Self.channels.count).allSatisfy { client.replies[10 + $0] != nil } }
            for (n, channel) in Self.channels.enumerated() {
                let result = clients[i].replies[10 + n]?["result"] as? [String: Any]
                #expect(result?["offset"] as? Int == 0, "subscribe \(channel)")
                clients[i].epochs[channel] = result?["epoch"] as? String
            }
        }

        // Every client publishes to every channel, without waiting for replies: same-loop and
        // cross-loop publications interleave on every shard.
        let rounds = 5
        var nextID = 100
        for round in 0..<rounds {
            for i in clients.indices {
                for channel in Self.channels {
                    try await clients[i].send(#"{"id":\#(nextID),"publish":{"channel":"\#(channel)","data":\#(round)}}"#)
                    nextID += 1
                }
            }
        }
        let total = rounds * clients.count
        for i in clients.indices {
            try await clients[i].readUntil { client in Self.channels.allSatisfy { client.offsets[$0]?.count ?? 0 >= total } }
            for channel in Self.channels {
                #expect(clients[i].offsets[channel] == Array(1...total), "client \(i) on loop \(clients[i].loop ?? -1), \(channel)")
            }
        }

        // Client 0 goes away; publications continue; it comes back and recovers what it missed.
        let gone = clients.removeFirst()
        try await gone.socket.channel.close()
        let missed = 3
        for round in 0..<missed {
            for channel in Self.channels {
                try await clients[0].send(#"{"id":\#(nextID),"publish":{"channel":"\#(channel)","data":\#(100 + round)}}"#)
                nextID += 1
            }
        }
        var back = try await Client.connect(port: port, group: group)
        for (n, channel) in Self.channels.enumerated() {
            let epoch = gone.epochs[channel] ?? ""
            try await back.send(#"{"id":\#(10 + n),"subscribe":{"channel":"\#(channel)","since":{"offset":\#(total),"epoch":"\#(epoch)"}}}"#)
        }
        try await back.readUntil { client in (0..<Self.channels.count).allSatisfy { client.replies[10 + $0] != nil } }
        for (n, channel) in Self.channels.enumerated() {
            let result = back.replies[10 + n]?["result"] as? [String: Any]
            #expect(result?["recovered"] as? Bool == true, "recover \(channel)")
            let recovered = (result?["publications"] as? [[String: Any]] ?? []).compactMap { $0["offset"] as? Int }
            // Missed ones come in the reply or, when they arrived while the subscribe was made, right after it.
            back.offsets[channel] = recovered + (back.offsets[channel] ?? [])
        }
        try await back.readUntil { client in Self.channels.allSatisfy { client.offsets[$0]?.count ?? 0 >= missed } }
        // One more publication from the recovered client: live again, on every shard.
        for channel in Self.channels {
            try await back.send(#"{"id":\#(nextID),"publish":{"channel":"\#(channel)","data":0}}"#)
            nextID += 1
        }
        try await back.readUntil { client in Self.channels.allSatisfy { client.offsets[$0]?.count ?? 0 >= missed + 1 } }
        for channel in Self.channels {
            #expect(back.offsets[channel] == Array((total + 1)...(total + missed + 1)), "recovered \(channel)")
        }
        for i in clients.indices {
            try await clients[i].readUntil { client in Self.channels.allSatisfy { client.offsets[$0]?.count ?? 0 >= total + missed + 1 } }
            for channel in Self.channels {
                #expect(clients[i].offsets[channel] == Array(1...(total + missed + 1)), "client \(i + 1), \(channel)")
            }
        }
        // Every delivery handed to another loop was counted, and uncounted once that loop ran it.
        #expect(backlog.totalAdded > 0)
        let deadline = NIODeadline.now() + .seconds(5)
        while backlog.weight != 0 && NIODeadline.now() < deadline { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(backlog.weight == 0)
        await node.stop()
        try await group.shutdownGracefully()
    }
}
