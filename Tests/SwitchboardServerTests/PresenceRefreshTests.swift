import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@testable import SwitchboardServer
import SwitchboardServerTesting
import Testing

/// A memory broker that records every presence write the node makes.
final class PresenceRecordingBroker: ForwardingBroker, @unchecked Sendable {
    /// One entry per `addPresence` call: the channel and the client ids written.
    let writes = NIOLockedValueBox<[(channel: String, clients: [String])]>([])

    override func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        self.writes.withLockedValue { $0.append((channel, clients.map(\.client))) }
        return super.addPresence(channel: channel, clients: clients, ttl: ttl)
    }

    func take() -> [(channel: String, clients: [String])] {
        self.writes.withLockedValue { writes in
            defer { writes = [] }
            return writes
        }
    }
}

@Suite("Presence refresh")
struct PresenceRefreshTests {
    /// Subscription ids as loops hand them out: a per-loop counter above the loop's index.
    static func ids(_ count: Int, loops: Int = 2) -> [SubscriptionID] {
        (0..<count).map { SubscriptionID($0 / loops + 1) << 8 | SubscriptionID($0 % loops) }
    }

    @Test("a round refreshes every entry exactly once; a channel gets one part per batch of entries, and the parts are even")
    func partsCoverEveryEntryOnce() {
        var schedule = PresenceSchedule(ttl: 9)  // rounds of 3 ticks
        let channels = [("big", 1_234), ("small", 3), ("empty", 0)]
        var parts: [PresenceSchedule.RefreshPart] = []
        for _ in 0..<3 {
            let tick = schedule.nextRefresh(channels: { channels })
            #expect(tick.count <= 2, "5 parts over 3 ticks: at most 2 a tick, got \(tick.count)")
            parts += tick
        }
        #expect(parts.filter { $0.channel == "big" }.count == 3)
        #expect(parts.filter { $0.channel == "small" }.count == 1)
        #expect(parts.filter { $0.channel == "empty" }.count == 1)
        for loops in [1, 2, 4] {
            let ids = Self.ids(1_234, loops: loops)
            let big = parts.filter { $0.channel == "big" }
            for id in ids {
                #expect(big.filter { $0.contains(id) }.count == 1, "id \(id) is in exactly one part")
            }
            for part in big {
                let size = ids.filter { part.contains($0) }.count
                #expect(size > 300 && size <= PresenceSchedule.batchSize, "\(loops) loops: part \(part.part) holds \(size) of 1,234")
            }
        }
        // The next call starts a new round from the channels as they are then.
        let next = schedule.nextRefresh(channels: { [("other", 10)] })
        #expect(next == [PresenceSchedule.RefreshPart(channel: "other", part: 0, parts: 1)])
    }

    @Test("a round lasts a third of the TTL, and any TTL is a number of ticks", arguments: [
        (60.0, 20), (3, 1), (1, 1), (0, 1), (-5, 1), (.nan, 1), (.infinity, 86_400), (1e300, 86_400), (300_000, 86_400),
    ])
    func rounds(ttl: Double, expected: Int) {
        #expect(PresenceSchedule.rounds(ttl: ttl) == expected)
    }

    @Test("a node refreshes each present subscriber once per round, a part per tick, in calls of at most 500")
    func nodeRefreshesEveryone() throws {
        var configuration = ServerConfiguration()
        configuration.presenceTTL = 9
        let node = try EmbeddedNode(configuration: configuration, makeBroker: { PresenceRecordingBroker(eventLoop: $0) })
        defer { node.shutdown() }
        var channels: [EmbeddedChannel] = []
        var clients = Set<String>()
        for i in 0..<1_200 {
            let session = try TestSession(channel: node.openWebSocket(), loop: node.loop)
            channels.append(session.channel)
            try session.send(#"{"id":1,"connect":{}}"#)
            try session.send(#"{"id":2,"subscribe":{"channel":"room"}}"#)
            let replies = try session.messages()
            let client = try #require(replies.first { $0["id"]?.intValue == 1 }?["result"]?["client"]?.stringValue, "client \(i)")
            clients.insert(client)
        }
        #expect(clients.count == 1_200)
        let joined = node.broker.take()
        #expect(Set(joined.flatMap(\.clients)) == clients, "every subscriber's entry is written when it joins")

        var refreshed: [String] = []
        for tick in 1...3 {
            node.advance(by: .seconds(1))
            let writes = node.broker.take()
            #expect(writes.allSatisfy { $0.channel == "room" && $0.clients.count <= PresenceSchedule.batchSize })
            let count = writes.reduce(0) { $0 + $1.clients.count }
            #expect(count < 1_200, "tick \(tick) refreshed \(count): a part, not the whole channel")
            refreshed += writes.flatMap(\.clients)
        }
        #expect(refreshed.count == 1_200, "one round (3 ticks) refreshed \(refreshed.count) entries")
        #expect(Set(refreshed) == clients, "every subscriber refreshed once")
        node.advance(by: .seconds(3))
        #expect(Set(node.broker.take().flatMap(\.clients)) == clients, "and again in the next round")
        for channel in channels { _ = try? channel.close().wait() }
    }
}
