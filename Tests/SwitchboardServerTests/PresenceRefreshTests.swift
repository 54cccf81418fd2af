import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@_spi(Harness) @testable import SwitchboardServer
@_spi(Harness) import SwitchboardServerTesting
import Testing

/// A memory broker that records every presence write the node makes.
final class PresenceRecordingBroker: ForwardingBroker, @unchecked Sendable {
    /// One entry per `addPresence` call: the channel and the client ids written.
    let writes = NIOLockedValueBox<[(channel: String, clients: [String])]>([])
    /// One entry per `removePresence` call.
    let removals = NIOLockedValueBox<[(channel: String, clients: [String])]>([])

    override func addPresence(channel: String, clients: [ClientInfo], ttl: Double) -> EventLoopFuture<Void> {
        self.writes.withLockedValue { $0.append((channel, clients.map(\.client))) }
        return super.addPresence(channel: channel, clients: clients, ttl: ttl)
    }

    /// While set, `removePresence` answers only when `releaseRemovals()` is called.
    let holdsRemovals = NIOLockedValueBox(false)
    private let heldRemovals = NIOLockedValueBox<[EventLoopPromise<Void>]>([])

    override func removePresence(channel: String, clients: [String]) -> EventLoopFuture<Void> {
        self.removals.withLockedValue { $0.append((channel, clients)) }
        let removed = super.removePresence(channel: channel, clients: clients)
        guard self.holdsRemovals.withLockedValue({ $0 }) else { return removed }
        let answer = removed.eventLoop.makePromise(of: Void.self)
        self.heldRemovals.withLockedValue { $0.append(answer) }
        return answer.futureResult
    }

    /// While set, control messages go nowhere (a forwarded command waits for an answer that never comes).
    let swallowsControl = NIOLockedValueBox(false)

    override func sendControl(_ message: ControlMessage, to node: String?) -> EventLoopFuture<Void> {
        guard self.swallowsControl.withLockedValue({ $0 }) else { return super.sendControl(message, to: node) }
        return self.eventLoop.makeSucceededVoidFuture()
    }

    /// Answers the removals held so far.
    func releaseRemovals() {
        for answer in self.heldRemovals.withLockedValue({ held in defer { held = [] }; return held }) { answer.succeed() }
    }

    func take() -> [(channel: String, clients: [String])] {
        self.writes.withLockedValue { writes in
            defer { writes = [] }
            return writes
        }
    }

    func takeRemovals() -> [(channel: String, clients: [String])] {
        self.removals.withLockedValue { removals in
            defer { removals = [] }
            return removals
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
        #expect(node.broker.take().isEmpty, "joins are gathered for the write delay")
        node.advance(by: PresenceSchedule.writeDelay)
        let joined = node.broker.take()
        #expect(Set(joined.flatMap(\.clients)) == clients, "every subscriber's entry is written when it joins")
        #expect(joined.count == 3, "1,200 joins within the delay are 3 calls of at most 500, not \(joined.count)")

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

    /// Connects and subscribes a client to `channel`; answers its client id.
    static func join(_ node: EmbeddedNode<PresenceRecordingBroker>, _ channel: String) throws -> (TestSession, String) {
        let session = try TestSession(channel: node.openWebSocket(), loop: node.loop)
        try session.send(#"{"id":1,"connect":{}}"#)
        try session.send(#"{"id":2,"subscribe":{"channel":"\#(channel)"}}"#)
        let replies = try session.messages()
        let client = try #require(replies.first { $0["id"]?.intValue == 1 }?["result"]?["client"]?.stringValue)
        #expect(replies.contains { $0["id"]?.intValue == 2 && $0["result"] != nil }, "subscribed to \(channel)")
        return (session, client)
    }

    @Test("joins and leaves within the write delay are one broker call each; a client that joined and left within it is only removed")
    func joinsAndLeavesAreGathered() throws {
        let node = try EmbeddedNode(makeBroker: { PresenceRecordingBroker(eventLoop: $0) })
        defer { node.shutdown() }
        let (a, clientA) = try Self.join(node, "room")
        let (b, clientB) = try Self.join(node, "room")
        let (c, clientC) = try Self.join(node, "room")
        _ = try c.channel.close().wait()
        node.loop.run()
        #expect(node.broker.take().isEmpty && node.broker.takeRemovals().isEmpty, "nothing is written before the delay")
        node.advance(by: PresenceSchedule.writeDelay)
        let added = node.broker.take()
        #expect(added.count == 1 && added.first?.channel == "room")
        #expect(Set(added.flatMap(\.clients)) == [clientA, clientB], "the client that left is not added: \(added)")
        let removed = node.broker.takeRemovals()
        #expect(removed.map(\.clients) == [[clientC]], "its entry is removed (a refresh may have written it): \(removed)")

        _ = try a.channel.close().wait()
        _ = try b.channel.close().wait()
        node.loop.run()
        #expect(node.broker.takeRemovals().isEmpty)
        node.advance(by: PresenceSchedule.writeDelay)
        let left = node.broker.takeRemovals()
        #expect(left.count == 1 && Set(left.flatMap(\.clients)) == [clientA, clientB], "two leaves, one call: \(left)")
        #expect(node.broker.take().isEmpty)
        let present = try node.broker.presence(channel: "room").wait()
        #expect(present.isEmpty, "nobody is left: \(present.map(\.client))")
    }

    @Test("a client that asks for presence right after it subscribed finds itself, before the write delay has passed")
    func presenceReadsItsOwnJoin() throws {
        let node = try EmbeddedNode(makeBroker: { PresenceRecordingBroker(eventLoop: $0) })
        defer { node.shutdown() }
        let (other, otherClient) = try Self.join(node, "room")
        let (session, client) = try Self.join(node, "room")
        try session.send(#"{"id":3,"presence":{"channel":"room"}}"#)
        let reply = try #require(try session.messages().first { $0["id"]?.intValue == 3 })
        guard case .object(let entries)? = reply["result"]?["clients"] else {
            Issue.record("no clients in \(reply)")
            return
        }
        #expect(Set(entries.members.map(\.key)) == [client, otherClient], "presence read at once: \(entries.members.map(\.key))")
        #expect(Set(node.broker.take().flatMap(\.clients)) == [client, otherClient], "the read wrote the gathered joins first")
        node.advance(by: PresenceSchedule.writeDelay)
        #expect(node.broker.take().isEmpty, "and nothing twice")
        _ = try other.channel.close().wait()
        _ = try session.channel.close().wait()
    }

    @Test("a stopping node writes the leaves it gathered at once, and its hub has stopped once the broker answered them")
    func stopWritesGatheredLeaves() throws {
        let node = try EmbeddedNode(makeBroker: { PresenceRecordingBroker(eventLoop: $0) })
        let (session, client) = try Self.join(node, "room")
        node.advance(by: PresenceSchedule.writeDelay)
        _ = node.broker.take()
        _ = try session.channel.close().wait()
        node.loop.run()
        #expect(node.broker.takeRemovals().isEmpty)
        node.broker.holdsRemovals.withLockedValue { $0 = true }
        let stopped = node.harness.stop()
        let hubStopped = NIOLockedValueBox(false)
        stopped.whenComplete { _ in hubStopped.withLockedValue { $0 = true } }
        node.loop.run()
        #expect(node.broker.takeRemovals().map(\.clients) == [[client]], "the leave is written when the node stops")
        // The node shuts its broker down after the hub's stop: that waits for the broker's answer,
        // or the write would race the broker's (and its loop's) shutdown.
        #expect(!hubStopped.withLockedValue { $0 }, "the hub's stop waits for the broker to answer the leave")
        node.broker.releaseRemovals()
        node.loop.run()
        #expect(hubStopped.withLockedValue { $0 })
        node.shutdown()
    }

    @Test("a stopping hub answers the commands it forwarded at once, without waiting for the broker to answer its last presence writes")
    func stopAnswersForwardsBeforeTheBroker() throws {
        let node = try EmbeddedNode(makeBroker: { PresenceRecordingBroker(eventLoop: $0) })
        let (session, _) = try Self.join(node, "room")
        node.advance(by: PresenceSchedule.writeDelay)
        _ = try session.channel.close().wait()
        node.loop.run()
        node.broker.holdsRemovals.withLockedValue { $0 = true }
        node.broker.swallowsControl.withLockedValue { $0 = true }
        let forward = node.harness.context.hub.forwardSessionCommands(session: "s", commands: "[]", to: "other", from: "this")
        let answer = NIOLockedValueBox<SessionCommandOutcome?>(nil)
        forward.whenSuccess { outcome in answer.withLockedValue { $0 = outcome } }
        node.loop.run()
        #expect(answer.withLockedValue { $0 } == nil, "waiting for the other node")
        let stopped = node.harness.stop()
        let hubStopped = NIOLockedValueBox(false)
        stopped.whenComplete { _ in hubStopped.withLockedValue { $0 = true } }
        node.loop.run()
        #expect(!hubStopped.withLockedValue { $0 }, "the leave's write is still unanswered")
        // A node that gives up waiting for a slow broker shuts its loops down next: a forward left
        // waiting then would never be answered (its timer does not run on a closed loop).
        #expect(answer.withLockedValue { $0 } == .rejected(status: 503, message: "node stopping"))
        node.broker.releaseRemovals()
        node.loop.run()
        #expect(hubStopped.withLockedValue { $0 })
        node.shutdown()
    }

    @Test("a schedule keeps a client in one list: a leave cancels its join, a join its leave, and each channel is taken alone")
    func scheduleKeepsTheLastChange() {
        var schedule = PresenceSchedule(ttl: 60)
        #expect(!schedule.hasPendingWrites)
        let a = ClientInfo(client: "a", user: "u")
        let b = ClientInfo(client: "b", user: "u")
        schedule.add(a, channel: "x")
        schedule.add(b, channel: "x")
        schedule.remove(client: "a", channel: "x")
        schedule.remove(client: "c", channel: "x")
        schedule.remove(client: "d", channel: "y")
        schedule.add(ClientInfo(client: "d", user: "v"), channel: "y")
        #expect(schedule.hasPendingWrites)
        #expect(schedule.takeWrites(channel: "y") == [.add(channel: "y", clients: [ClientInfo(client: "d", user: "v")])])
        #expect(schedule.takeWrites(channel: "y").isEmpty)
        #expect(schedule.takeWrites() == [.remove(channel: "x", clients: ["a", "c"]), .add(channel: "x", clients: [b])])
        #expect(!schedule.hasPendingWrites && schedule.takeWrites().isEmpty)

        // A joined client's info is replaced by a later join of the same id.
        schedule.add(ClientInfo(client: "a", user: "old"), channel: "x")
        schedule.add(ClientInfo(client: "a", user: "new"), channel: "x")
        #expect(schedule.takeWrites() == [.add(channel: "x", clients: [ClientInfo(client: "a", user: "new")])])
    }

    @Test("gathered changes go in calls of at most 500 clients, joins and leaves alike")
    func gatheredWritesAreBatched() {
        var schedule = PresenceSchedule(ttl: 60)
        for i in 0..<1_201 { schedule.add(ClientInfo(client: "j\(i)", user: ""), channel: "x") }
        for i in 0..<501 { schedule.remove(client: "l\(i)", channel: "x") }
        let writes = schedule.takeWrites()
        var added: [String] = []
        var removed: [String] = []
        for write in writes {
            switch write {
            case .add(let channel, let clients):
                #expect(channel == "x" && clients.count <= PresenceSchedule.batchSize)
                added += clients.map(\.client)
            case .remove(let channel, let clients):
                #expect(channel == "x" && clients.count <= PresenceSchedule.batchSize)
                removed += clients
            }
        }
        #expect(writes.count == 5, "3 calls of joins, 2 of leaves: \(writes.count)")
        #expect(added.count == 1_201 && Set(added).count == 1_201)
        #expect(removed.count == 501 && Set(removed).count == 501)
    }
}
