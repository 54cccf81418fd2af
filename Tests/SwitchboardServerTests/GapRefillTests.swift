import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@testable import SwitchboardServer
import SwitchboardServerTesting
import Testing

/// A real memory broker whose deliveries to the node can be lost on purpose,
/// as a broker link that drops messages would lose them.
final class LossyBroker: ForwardingBroker, @unchecked Sendable {
    /// Offsets whose live delivery is dropped.
    let dropOffsets = NIOLockedValueBox<Set<UInt64>>([])

    override func start(eventHandler: @escaping @Sendable (BrokerEvent) -> Void) -> EventLoopFuture<Void> {
        super.start { event in
            if case .publication(_, let publication, _) = event, self.dropOffsets.withLockedValue({ $0.contains(publication.offset) }) {
                return
            }
            eventHandler(event)
        }
    }
}

/// A memory broker whose history answers can be held back (computed when asked, handed over when the
/// test says: a read that loses the race against live deliveries), or rolled back (as a promoted
/// replica that lacks the newest publications would answer), and which records epoch renewals.
final class RacingHistoryBroker: ForwardingBroker, @unchecked Sendable {
    var holdsReads = false
    var held: [(answer: EventLoopFuture<HistoryResult>, promise: EventLoopPromise<HistoryResult>)] = []
    var reads = 0
    /// When set, history answers as if the broker's top were this offset (same epoch).
    var rolledBackTo: UInt64?
    var renewals: [String] = []
    /// When set, history answers in this epoch (as after another node renewed it).
    var renewedEpoch: String?

    override func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        self.reads += 1
        var answer = super.history(query)
        if let epoch = self.renewedEpoch {
            answer = answer.map { HistoryResult(publications: [], position: StreamPosition(offset: $0.position.offset, epoch: epoch)) }
        }
        if let top = self.rolledBackTo {
            answer = answer.map { result in
                HistoryResult(
                    publications: result.publications.filter { $0.offset <= top },
                    position: StreamPosition(offset: top, epoch: result.position.epoch))
            }
        }
        guard self.holdsReads else { return answer }
        let promise = self.eventLoop.makePromise(of: HistoryResult.self)
        self.held.append((answer, promise))
        return promise.futureResult
    }

    /// Hands over the oldest held answer only.
    func releaseOldestRead() {
        guard !self.held.isEmpty else { return }
        let (answer, promise) = self.held.removeFirst()
        answer.cascade(to: promise)
    }

    func releaseReads() {
        let held = self.held
        self.held = []
        for (answer, promise) in held { answer.cascade(to: promise) }
    }

    override func renewEpoch(channel: String, ifStill epoch: String) -> EventLoopFuture<Void> {
        self.renewals.append(epoch)
        return super.renewEpoch(channel: channel, ifStill: epoch)
    }
}

@Suite("Hub gap detection and refill")
struct GapRefillTests {
    /// A node on a broker that loses chosen deliveries.
    struct Setup {
        let node: EmbeddedNode<LossyBroker>
        var loop: EmbeddedEventLoop { self.node.loop }
        var broker: LossyBroker { self.node.broker }
        var context: NodeContext { self.node.context }

        init() throws {
            self.node = try EmbeddedNode(makeBroker: { LossyBroker(eventLoop: $0) })
        }

        func session() throws -> TestSession {
            try self.node.session()
        }

        func publish(_ n: Int) {
            for i in 0..<n {
                _ = self.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "\(i)"), historySize: 100, historyTTL: 60))
            }
            self.loop.run()
        }
    }

    @Test("a live publication after a hole waits until the hole is refilled from history")
    func refill() throws {
        let setup = try Setup()
        let s = try setup.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        setup.publish(2)
        setup.broker.dropOffsets.withLockedValue { $0 = [3, 4] }
        setup.publish(4)
        let offsets = try s.messages().compactMap { $0["pub"]?["offset"]?.intValue }
        #expect(offsets == [1, 2, 3, 4, 5, 6])
    }

    @Test("a hole that history no longer holds: subscribers are told (2500), never skipped silently")
    func insufficientState() throws {
        let setup = try Setup()
        let s = try setup.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        setup.publish(1)
        setup.broker.dropOffsets.withLockedValue { $0 = Set(2...120) }
        // 120 publications with history 100: offset 2 is gone from history when 121 arrives.
        for i in 0..<120 {
            _ = setup.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "\(i)"), historySize: 100, historyTTL: 60))
        }
        setup.loop.run()
        let messages = try s.messages()
        #expect(messages.compactMap { $0["pub"]?["offset"]?.intValue } == [1])
        #expect(messages.contains { $0["unsubscribe"]?["code"] == .number("2500") })
    }

    @Test("a join whose history read predates an epoch change reads again: the subscriber gets the new epoch, not a position that no longer holds")
    func joinReadOvertakenByAnEpochChange() throws {
        let node = try EmbeddedNode(makeBroker: { RacingHistoryBroker(eventLoop: $0) })
        let publish = { _ = node.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 100, historyTTL: 60)) }
        let first = try node.session()
        try first.send(#"{"id":1,"connect":{}}"#)
        try first.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        for _ in 1...3 { publish() }
        node.loop.run()
        let old = try node.broker.inner.history(HistoryQuery(channel: "c", limit: 0)).wait().position.epoch
        // A second subscriber's history read is answered (3 in the old epoch) but held back...
        node.broker.holdsReads = true
        let second = try node.session()
        try second.send(#"{"id":1,"connect":{}}"#)
        try second.send(#"{"id":2,"subscribe":{"channel":"c","since":{"offset":3,"epoch":"\#(old)"}}}"#)
        #expect(node.broker.held.count == 1)
        // ...while another node renews the channel's epoch and a publication in the new one arrives.
        let new = "renewed"
        node.broker.renewedEpoch = new
        node.broker.deliver(.publication(channel: "c", Publication(offset: 1, data: ByteBuffer(string: "2")), epoch: new))
        node.loop.run()
        #expect(try first.messages().contains { $0["unsubscribe"]?["code"] == .number("2500") })
        node.broker.holdsReads = false
        let readsBefore = node.broker.reads
        node.broker.releaseReads()
        node.loop.run()
        // The stale answer was not used: the join read again and answers in the new epoch.
        #expect(node.broker.reads > readsBefore)
        let reply = try #require(try second.messages().first { $0["id"] == .number("2") }?["result"])
        #expect(reply["epoch"]?.stringValue == new)
        #expect(reply["recovered"] == .bool(false))
    }

    @Test("joins that overlap without a break (a wave of polls on a busy channel) keep the hub's join buffer to what they still need, and each gets every publication once, in order")
    func overlappingJoinsTrimTheBuffer() throws {
        let node = try EmbeddedNode(makeBroker: { RacingHistoryBroker(eventLoop: $0) })
        let publish = { _ = node.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 1000, historyTTL: 60)) }
        let first = try node.session()
        try first.send(#"{"id":1,"connect":{}}"#)
        try first.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        publish()
        node.loop.run()
        let epoch = try node.broker.inner.history(HistoryQuery(channel: "c", limit: 0)).wait().position.epoch
        let shard = try #require(node.context.hub.shards.first { $0.channels["c"] != nil })
        node.broker.holdsReads = true
        var sessions: [TestSession] = []
        var largest = 0
        // Each round a new subscriber's read is held while ten publications arrive, and the oldest
        // held read is answered: there is always a join under way.
        for _ in 1...40 {
            let s = try node.session()
            try s.send(#"{"id":1,"connect":{}}"#)
            try s.send(#"{"id":2,"subscribe":{"channel":"c","since":{"offset":1,"epoch":"\#(epoch)"}}}"#)
            sessions.append(s)
            for _ in 1...10 { publish() }
            node.loop.run()
            if sessions.count > 2 { node.broker.releaseOldestRead() }
            node.loop.run()
            largest = max(largest, shard.channels["c"]?.buffer.count ?? 0)
        }
        // Without trimming it would hold all 400 publications.
        #expect(largest <= 100)
        node.broker.holdsReads = false
        node.broker.releaseReads()
        node.loop.run()
        #expect(shard.channels["c"]?.buffer.isEmpty == true)
        for s in sessions {
            let messages = try s.messages()
            let reply = try #require(messages.first { $0["id"] == .number("2") }?["result"])
            #expect(reply["recovered"] == .bool(true))
            let offsets = (reply["publications"]?.arrayValue ?? []).compactMap { $0["offset"]?.intValue }
                + messages.compactMap { $0["pub"]?["offset"]?.intValue }
            #expect(offsets == Array(2...401))
        }
    }

    @Test("a 2500 for a subscription whose reply is queued behind an earlier one follows that reply, never precedes it")
    func unsubscribeWaitsForTheQueuedReply() throws {
        let node = try EmbeddedNode(makeBroker: { RacingHistoryBroker(eventLoop: $0) })
        let first = try node.session()
        try first.send(#"{"id":1,"connect":{}}"#)
        try first.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        _ = node.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 100, historyTTL: 60))
        node.loop.run()
        // The second client's history answer is held; its subscribe (answered at once: the channel is
        // live here) waits behind it.
        node.broker.holdsReads = true
        let second = try node.session()
        try second.send(#"{"id":1,"connect":{}}"#)
        try second.send(#"{"id":2,"history":{"channel":"c"}}"#)
        try second.send(#"{"id":3,"subscribe":{"channel":"c"}}"#)
        // The channel's epoch changes: every subscriber is told 2500.
        node.broker.renewedEpoch = "renewed"
        node.broker.deliver(.publication(channel: "c", Publication(offset: 1, data: ByteBuffer(string: "2")), epoch: "renewed"))
        node.loop.run()
        #expect(try first.messages().contains { $0["unsubscribe"]?["code"] == .number("2500") })
        node.broker.holdsReads = false
        node.broker.releaseReads()
        let messages = try second.messages()
        let reply = try #require(messages.firstIndex { $0["id"] == .number("3") })
        let push = try #require(messages.firstIndex { $0["unsubscribe"]?["code"] == .number("2500") })
        #expect(messages.firstIndex { $0["id"] == .number("2") }! < reply)
        #expect(reply < push)
    }

    @Test("an SSE resume position is never ahead of what the client was sent: a subscription whose reply waits reports where it asked to resume from")
    func resumePositionWaitsForTheReply() throws {
        let node = try EmbeddedNode(makeBroker: { RacingHistoryBroker(eventLoop: $0) })
        let publish = { _ = node.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 100, historyTTL: 60)) }
        let first = try node.session()
        try first.send(#"{"id":1,"connect":{}}"#)
        try first.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        publish()
        node.loop.run()
        let epoch = try node.broker.inner.history(HistoryQuery(channel: "c", limit: 0)).wait().position.epoch
        node.broker.holdsReads = true
        let second = try node.session()
        try second.send(#"{"id":1,"connect":{}}"#)
        let client = try #require(try second.messages().first { $0["id"] == .number("1") }?["result"]?["client"]?.stringValue)
        let session = try #require(node.context.fanouts[0].session(client: client))
        // The subscribe is made at once (the channel is live here) but its reply waits behind the history's.
        try second.send(#"{"id":2,"history":{"channel":"c"}}"#)
        try second.send(#"{"id":3,"subscribe":{"channel":"c"}}"#)
        publish()
        node.loop.run()
        #expect(session.positions.first { $0.channel == "c" }.map { $0.position == nil } == true)
        node.broker.holdsReads = false
        node.broker.releaseReads()
        node.loop.run()
        #expect(try second.messages().compactMap { $0["pub"]?["offset"]?.intValue } == [2])
        #expect(session.positions.first { $0.channel == "c" }?.position == StreamPosition(offset: 2, epoch: epoch))
        #expect(session.waitingBytes == 0)  // everything held was written and counted out
    }

    @Test("deliveries held behind a stalled reply count against the outbound limit: past it the client is a slow consumer (3004), not a growing buffer")
    func heldDeliveriesAreBounded() throws {
        var configuration = ServerConfiguration()
        configuration.outboundLimit = 8192
        let node = try EmbeddedNode(configuration: configuration, makeBroker: { RacingHistoryBroker(eventLoop: $0) })
        let kilobyte = ByteBuffer(string: "\"" + String(repeating: "x", count: 1_022) + "\"")
        let publish = { _ = node.broker.publish(PublishRequest(channel: "c", data: kilobyte, historySize: 100, historyTTL: 60)) }
        let first = try node.session()
        try first.send(#"{"id":1,"connect":{}}"#)
        try first.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        publish()
        node.loop.run()
        node.broker.holdsReads = true
        let second = try node.session()
        try second.send(#"{"id":1,"connect":{}}"#)
        try second.send(#"{"id":2,"history":{"channel":"c","limit":0}}"#)  // its answer stalls
        try second.send(#"{"id":3,"subscribe":{"channel":"c"}}"#)  // made at once, its reply waits
        _ = try second.frames()
        for _ in 1...4 { publish() }
        node.loop.run()
        #expect(try second.frames().allSatisfy { $0.closeCode == nil })  // 4 KB held: within the limit
        for _ in 1...6 { publish() }
        node.loop.run()
        #expect(try second.frames().contains { $0.closeCode == 3004 })
        node.broker.holdsReads = false
        node.broker.releaseReads()
        node.loop.run()
    }

    @Test("a subscription that expires or is unsubscribed by the server while still being made: its subscribe is answered (109 for an expired token, which clients refresh and retry), with no push")
    func serverUnsubscribeWhileJoining() throws {
        let node = try EmbeddedNode(makeBroker: { RacingHistoryBroker(eventLoop: $0) })
        node.broker.holdsReads = true
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        let client = try #require(try s.messages().first { $0["id"] == .number("1") }?["result"]?["client"]?.stringValue)
        let session = try #require(node.context.fanouts[0].session(client: client))
        try s.send(#"{"id":2,"subscribe":{"channel":"c","since":{"offset":0,"epoch":"e"}}}"#)
        try s.send(#"{"id":3,"subscribe":{"channel":"d","since":{"offset":0,"epoch":"e"}}}"#)
        session.serverUnsubscribe("c", .subscriptionExpired)
        session.serverUnsubscribe("d", .server)
        try s.send(#"{"id":4,"ping":{}}"#)
        let messages = try s.messages()
        #expect(messages.compactMap { $0["id"]?.intValue } == [2, 3, 4])
        #expect(messages.first { $0["id"] == .number("2") }?["error"]?["code"]?.intValue == 109)
        #expect(messages.first { $0["id"] == .number("3") }?["error"]?["code"]?.intValue == 108)
        #expect(!messages.contains { $0["unsubscribe"] != nil })
        node.broker.holdsReads = false
        node.broker.releaseReads()
        node.loop.run()
    }

    @Test("a link interrupted by a failover that lost delivered publications renews the epoch (their offsets would be reused)")
    func interruptedLinkWithLostPublications() throws {
        let node = try EmbeddedNode(makeBroker: { RacingHistoryBroker(eventLoop: $0) })
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        for _ in 1...5 {
            _ = node.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 100, historyTTL: 60))
        }
        node.loop.run()
        let epoch = try node.broker.inner.history(HistoryQuery(channel: "c", limit: 0)).wait().position.epoch
        #expect(try s.messages().compactMap { $0["pub"]?["offset"]?.intValue } == [1, 2, 3, 4, 5])
        // The promoted replica has only 1...3 of epoch `epoch`; the subscriber link comes back to it.
        node.broker.rolledBackTo = 3
        node.broker.deliver(.deliveryInterrupted)
        node.loop.run()
        #expect(node.broker.renewals == [epoch])
        #expect(try s.messages().contains { $0["unsubscribe"]?["code"] == .number("2500") })
    }

    @Test("after an interrupted broker link, every channel is refilled from its last position")
    func interrupted() throws {
        let setup = try Setup()
        let s = try setup.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"c"}}"#)
        setup.publish(1)
        setup.broker.dropOffsets.withLockedValue { $0 = [2, 3] }
        setup.publish(2)
        setup.broker.dropOffsets.withLockedValue { $0 = [] }
        // The broker says its link was down (as RedisSubscriber does after resubscribing).
        setup.broker.deliver(.deliveryInterrupted)
        setup.loop.run()
        let offsets = try s.messages().compactMap { $0["pub"]?["offset"]?.intValue }
        #expect(offsets == [1, 2, 3])
    }
}
