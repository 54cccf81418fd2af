import Foundation
import NIOCore
import NIOEmbedded
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@testable import SwitchboardServer
import SwitchboardServerTesting
import Testing

/// A memory broker that answers history reads on a later loop turn (as Redis does) and records
/// the recoveries among them: how many were at the broker at once, what each asked and read.
final class WindowedHistoryBroker: ForwardingBroker, @unchecked Sendable {
    private(set) var inFlight = 0
    private(set) var mostInFlight = 0
    /// Each recovery (a read from a position), in the order asked, with the data bytes it returned.
    private(set) var recoveries: [(query: HistoryQuery, bytes: Int)] = []
    /// While set, recoveries are held unanswered until `release()` (a slow broker).
    var holding = false
    /// While set, broker subscribes complete on a later loop turn (a network broker's round trip).
    var delaysSubscribes = false
    private var held: [@Sendable () -> Void] = []

    override func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        guard query.sinceOffset != nil else { return super.history(query) }
        self.inFlight += 1
        self.mostInFlight = max(self.mostInFlight, self.inFlight)
        let index = self.recoveries.count
        self.recoveries.append((query, 0))
        let promise = self.eventLoop.makePromise(of: HistoryResult.self)
        let inner = self.inner
        let answer: @Sendable () -> Void = {
            inner.history(query).map { result in
                self.inFlight -= 1
                self.recoveries[index].bytes = result.publications.reduce(0) { $0 + $1.data.readableBytes }
                return result
            }.cascade(to: promise)
        }
        if self.holding {
            self.held.append(answer)
        } else {
            self.eventLoop.execute(answer)
        }
        return promise.futureResult
    }

    override func subscribe(channel: String) -> EventLoopFuture<Void> {
        guard self.delaysSubscribes else { return super.subscribe(channel: channel) }
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.eventLoop.execute { super.subscribe(channel: channel).cascade(to: promise) }
        return promise.futureResult
    }

    /// Answers the held recoveries (on a later loop turn) and holds no more.
    func release() {
        self.holding = false
        let held = self.held
        self.held = []
        for answer in held { self.eventLoop.execute(answer) }
    }
}

@Suite("RecoveryReadWindow: a session's recovering history reads, a few at a time")
struct RecoveryReadWindowTests {
    struct Read: Identifiable, Equatable {
        var id: Int
    }

    @Test("up to `width` reads are issued; the rest wait and go in order as places free")
    func admitsInOrder() {
        var window = RecoveryReadWindow<Read>()
        let width = RecoveryReadWindow<Read>.width
        for i in 0..<width { #expect(window.admit(Read(id: i)) == .issue) }
        #expect(window.admit(Read(id: 100)) == .wait)
        #expect(window.admit(Read(id: 101)) == .wait)
        #expect(window.inFlightCount == width && window.waitingCount == 2)
        #expect(window.finished(2) == Read(id: 100))
        #expect(window.finished(0) == Read(id: 101))
        #expect(window.finished(1) == nil)
        #expect(window.inFlightCount == width - 1 && window.waitingCount == 0)
        #expect(window.admit(Read(id: 102)) == .issue)
    }

    @Test("a waiting read that ends takes no place; an unknown id changes nothing; every place comes back")
    func endsWithoutLeaks() {
        var window = RecoveryReadWindow<Read>()
        let width = RecoveryReadWindow<Read>.width
        for i in 0..<(width + 3) { _ = window.admit(Read(id: i)) }
        #expect(window.finished(width + 1) == nil, "a waiting read ended: nothing is issued for it")
        #expect(window.finished(999) == nil)
        #expect(window.inFlightCount == width && window.waitingCount == 2)
        #expect(window.finished(0) == Read(id: width))
        #expect(window.finished(1) == Read(id: width + 2))
        for id in [2, 3, width, width + 2] { #expect(window.finished(id) == nil) }
        #expect(window.inFlightCount == 0 && window.waitingCount == 0)
    }

    // MARK: the session

    /// `count` channels `r0`... with `perChannel` publications of `size` bytes each; their epochs.
    static func node(
        channels count: Int, perChannel: Int, size: Int, configure: (inout ServerConfiguration) -> Void = { _ in }
    ) throws -> (EmbeddedNode<WindowedHistoryBroker>, [String]) {
        var configuration = ServerConfiguration()
        configure(&configuration)
        let node = try EmbeddedNode(configuration: configuration, makeBroker: { WindowedHistoryBroker(eventLoop: $0) })
        var epochs: [String] = []
        for c in 0..<count {
            for _ in 0..<perChannel {
                // A JSON string of `size` bytes.
                let data = ByteBuffer(string: "\"" + String(repeating: "x", count: size - 2) + "\"")
                _ = node.broker.inner.publish(PublishRequest(channel: "r\(c)", data: data, historySize: 100, historyTTL: 60))
            }
            node.loop.run()
            epochs.append(try node.broker.inner.history(HistoryQuery(channel: "r\(c)", limit: 0)).wait().position.epoch)
        }
        return (node, epochs)
    }

    /// A `subscribe` of channel `r<c>` from its start, as command `id`.
    static func recovering(_ c: Int, id: Int, _ epochs: [String]) -> String {
        #"{"id":\#(id),"subscribe":{"channel":"r\#(c)","since":{"offset":0,"epoch":"\#(epochs[c])"}}}"#
    }

    /// A session on `node` that has connected.
    static func connected(_ node: EmbeddedNode<WindowedHistoryBroker>) throws -> TestSession {
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        _ = try session.messages()
        return session
    }

    static func subs(_ epochs: [String], _ range: Range<Int>) -> String {
        range.map { #""r\#($0)":{"offset":0,"epoch":"\#(epochs[$0])"}"# }.joined(separator: ",")
    }

    @Test("a connect recovering 20 channels has at most `width` reads at the broker at once, and recovers all 20")
    func connectReadsAFewAtATime() throws {
        let (node, epochs) = try Self.node(channels: 20, perChannel: 3, size: 100)
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{"subs":{\#(Self.subs(epochs, 0..<20))}}}"#)
        let reply = try #require(try session.messages().first { $0["id"]?.intValue == 1 })
        for c in 0..<20 {
            #expect(reply["result"]?["subs"]?["r\(c)"]?["recovered"] == .bool(true), "r\(c): \(reply)")
            #expect(reply["result"]?["subs"]?["r\(c)"]?["publications"]?.arrayValue?.count == 3, "r\(c)")
        }
        #expect(node.broker.recoveries.count == 20)
        #expect(node.broker.mostInFlight == RecoveryReadWindow<SessionSubscription>.width)
    }

    @Test("a connect's later recoveries read only the room its reply has left, not the whole room each")
    func connectReadsWithinTheRoomLeft() throws {
        // The reply's room is 20,000 bytes; each channel's recovery takes 15,000 and more.
        let (node, epochs) = try Self.node(channels: 8, perChannel: 3, size: 5_000) { $0.outboundLimit = 40_000 }
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{"subs":{\#(Self.subs(epochs, 0..<8))}}}"#)
        let reply = try #require(try session.messages().first { $0["id"]?.intValue == 1 })
        let recovered = (0..<8).filter { reply["result"]?["subs"]?["r\($0)"]?["recovered"] == .bool(true) }
        #expect(recovered == [0], "\(reply)")
        let width = RecoveryReadWindow<SessionSubscription>.width
        let reads = node.broker.recoveries
        #expect(reads.count == 8)
        // The first `width` went out together, each with the whole room; the rest after the first
        // answer took its share, each with what was left: too little for one publication.
        #expect(reads.prefix(width).allSatisfy { $0.query.maximumBytes == 20_000 }, "\(reads.map(\.query.maximumBytes))")
        #expect(reads.dropFirst(width).allSatisfy { ($0.query.maximumBytes ?? .max) < 5_096 && $0.bytes == 0 }, "\(reads.map(\.query.maximumBytes))")
    }

    @Test("each waiting recovery meets the address's history budget when its turn comes: spent, it is 111 and reads nothing")
    func waitingRecoveriesMeetTheBudget() throws {
        // Each recovery reads 100,000 bytes; the burst is 250,000. The first `width` reads are
        // already out when the budget runs dry; the ones behind them are refused, unread.
        let (node, epochs) = try Self.node(channels: 8, perChannel: 10, size: 10_000) {
            $0.limits.historyBytesPerSecond = 0.001
            $0.limits.historyBurstBytes = 250_000
        }
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{"subs":{\#(Self.subs(epochs, 0..<8))}}}"#)
        let reply = try #require(try session.messages().first { $0["id"]?.intValue == 1 })
        let width = RecoveryReadWindow<SessionSubscription>.width
        for c in 0..<width {
            #expect(reply["result"]?["subs"]?["r\(c)"]?["recovered"] == .bool(true), "r\(c): \(reply)")
        }
        for c in width..<8 {
            #expect(reply["result"]?["subs"]?["r\(c)"]?["error"]?["code"]?.intValue == 111, "r\(c): \(reply)")
        }
        #expect(node.broker.recoveries.count == width)
    }

    @Test("subscriptions ended while their reads wait or are in flight give their places back (the latter once answered): later recoveries still go")
    func endedRecoveriesFreeTheirPlaces() throws {
        let (node, epochs) = try Self.node(channels: 12, perChannel: 2, size: 100)
        let session = try Self.connected(node)
        // Six recovering subscribes and, in the same frame, the unsubscribe of each: the last two
        // (first) while they wait, then the first four with their reads in flight.
        var frame: [String] = []
        for c in 0..<6 {
            frame.append(Self.recovering(c, id: 10 + c, epochs))
        }
        for c in [5, 4, 0, 1, 2, 3] { frame.append(#"{"id":\#(20 + c),"unsubscribe":{"channel":"r\#(c)"}}"#) }
        try session.send(frame.joined(separator: "\n"))
        let first = try session.messages()
        #expect((10..<16).allSatisfy { id in first.contains { $0["id"]?.intValue == id && $0["error"] != nil } }, "\(first)")
        let width = RecoveryReadWindow<SessionSubscription>.width
        #expect(node.broker.recoveries.count == width, "the waiting ones never read")
        // Six more: every place is free again, so all six recover.
        frame = (6..<12).map { c in Self.recovering(c, id: 30 + c, epochs) }
        try session.send(frame.joined(separator: "\n"))
        let second = try session.messages()
        for c in 6..<12 {
            let answer = second.first { $0["id"]?.intValue == 30 + c }
            #expect(answer?["result"]?["recovered"] == .bool(true), "r\(c): \(second)")
        }
    }

    @Test("subscribe + unsubscribe pairs cannot have more than `width` reads at the broker: an ended read keeps its place until the hub answers it")
    func endedReadsKeepTheirPlacesUntilAnswered() throws {
        let (node, epochs) = try Self.node(channels: 26, perChannel: 2, size: 100)
        let session = try Self.connected(node)
        // Sixteen subscribe + unsubscribe pairs, then four subscribes that stay, with a slow broker:
        // the first reads stay out while the session hears its unsubscribes answered.
        var frame: [String] = []
        for c in 0..<16 {
            frame.append(Self.recovering(c, id: 10 + c, epochs))
            frame.append(#"{"id":\#(100 + c),"unsubscribe":{"channel":"r\#(c)"}}"#)
        }
        for c in 16..<20 {
            frame.append(Self.recovering(c, id: 10 + c, epochs))
        }
        node.broker.holding = true
        try session.send(frame.joined(separator: "\n"))
        let replies = try session.messages()
        #expect((10..<26).allSatisfy { id in replies.contains { $0["id"]?.intValue == id && $0["error"] != nil } }, "\(replies)")
        let width = RecoveryReadWindow<SessionSubscription>.width
        #expect(node.broker.inFlight == width, "the staying subscribes wait for the ended reads to return")
        node.broker.release()
        let later = try session.messages()
        for c in 16..<20 {
            #expect(later.first { $0["id"]?.intValue == 10 + c }?["result"]?["recovered"] == .bool(true), "r\(c): \(later)")
        }
        #expect(node.broker.mostInFlight == width)
        // Every place came back: six more all recover.
        frame = (20..<26).map { c in Self.recovering(c, id: 30 + c, epochs) }
        try session.send(frame.joined(separator: "\n"))
        let second = try session.messages()
        for c in 20..<26 {
            #expect(second.first { $0["id"]?.intValue == 30 + c }?["result"]?["recovered"] == .bool(true), "r\(c): \(second)")
        }
        // A session closing with ended reads still out leaves them behind safely (no pending entry
        // outlives it: the test process would crash on the hub's late answers).
        node.broker.holding = true
        frame = (0..<2).flatMap { c in [
            Self.recovering(c, id: 60 + c, epochs),
            #"{"id":\#(70 + c),"unsubscribe":{"channel":"r\#(c)"}}"#,
        ] }
        try session.channel.writeInbound(ByteBuffer(bytes: TestFrames.text(frame.joined(separator: "\n"))))
        _ = try? session.channel.finish(acceptAlreadyClosed: true)
        node.loop.run()
        node.broker.release()
        node.loop.run()
        #expect(node.broker.inFlight == 0)
    }

    @Test("a poll keeps of each recovery only what fits the room its earlier ones left, counted as the broker's read counts")
    func pollPrefix() {
        func publications(_ sizes: [Int]) -> [Publication] {
            sizes.enumerated().map { Publication(offset: UInt64($0.offset + 1), data: ByteBuffer(repeating: 0x61, count: $0.element)) }
        }
        let envelope = HistoryQuery.envelopeBytes
        #expect(ClientSession.pollPrefix(publications([100, 100, 100]), room: 3 * (100 + envelope)) == (3, 3 * (100 + envelope)))
        #expect(ClientSession.pollPrefix(publications([100, 100, 100]), room: 3 * (100 + envelope) - 1) == (2, 2 * (100 + envelope)))
        #expect(ClientSession.pollPrefix(publications([5_000, 10]), room: 1_000) == (0, 0), "none past a publication that does not fit")
        #expect(ClientSession.pollPrefix([], room: 0) == (0, 0))
    }

    /// `count` channels `r0`... with no publications, answers of about `answer` bytes, and a way to publish.
    static func pollNode(channels count: Int, answer: Int) throws
        -> (node: EmbeddedNode<WindowedHistoryBroker>, publish: (String, Int) -> Void)
    {
        let (node, _) = try Self.node(channels: 0, perChannel: 0, size: 100) { $0.outboundLimit = answer }
        let publish: (String, Int) -> Void = { channel, size in
            let data = ByteBuffer(string: "\"" + String(repeating: "x", count: size - 2) + "\"")
            _ = node.broker.inner.publish(PublishRequest(channel: channel, data: data, historySize: 100, historyTTL: 60))
            node.loop.run()
        }
        return (node, publish)
    }

    static func poll(_ node: EmbeddedNode<WindowedHistoryBroker>, _ subs: String) throws -> [JSONValue] {
        let body = #"{"subs":{\#(subs)},"timeout":0}"#
        let channel = try node.openHTTP()
        try channel.writeInbound(ByteBuffer(string:
            "POST /poll HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"))
        node.loop.run()
        let answer = String(decoding: channel.readAllOutbound(), as: UTF8.self)
        _ = try? channel.finish(acceptAlreadyClosed: true)
        let json = try #require(answer.range(of: "\r\n\r\n").map { String(answer[$0.upperBound...]) })
        return try #require(try JSONParser().parse(Array(json.utf8)).arrayValue)
    }

    @Test("a publication larger than any poll answer is said lost at once (recovered: false), even behind a busy channel")
    func pollSaysLostAPublicationLargerThanTheAnswer() throws {
        let (node, publish) = try Self.pollNode(channels: 5, answer: 20_000)
        publish("r4", 30_000)
        for c in 0..<4 { publish("r\(c)", 100) }
        var epochs: [String] = []
        for c in 0..<5 { epochs.append(try node.broker.inner.history(HistoryQuery(channel: "r\(c)", limit: 0)).wait().position.epoch) }
        var offsets = [0, 0, 0, 0, 0]
        var told = false
        for _ in 0..<3 {
            publish("r0", 100)  // a busy channel, answered before r4 each time
            let subs = (0..<5).map { #""r\#($0)":{"offset":\#(offsets[$0]),"epoch":"\#(epochs[$0])"}"# }.joined(separator: ",")
            for item in try Self.poll(node, subs) {
                let c = try #require(item["channel"]?.stringValue.flatMap { Int($0.dropFirst()) })
                if let offset = item["pub"]?["offset"]?.intValue { offsets[c] = offset }
                if let offset = item["position"]?["offset"]?.intValue { offsets[c] = offset }
                if c == 4, item["position"]?["recovered"] == .bool(false) { told = true }
            }
        }
        #expect(told, "offsets \(offsets)")
    }

    @Test("a publication that fits the read's bound but no answer (its publisher's info is large) is said lost, and does not hold back the poll's other channels")
    func pollSaysLostAPublicationNoAnswerHolds() throws {
        let (node, _) = try Self.pollNode(channels: 2, answer: 20_000)
        let data = ByteBuffer(string: "\"" + String(repeating: "x", count: 19_000) + "\"")
        let info = ClientInfo(client: "c", user: "u", info: .string(String(repeating: "i", count: 2_000)))
        _ = node.broker.inner.publish(PublishRequest(channel: "r0", data: data, info: info, historySize: 100, historyTTL: 60))
        for n in 2...3 {
            _ = node.broker.inner.publish(PublishRequest(channel: "r0", data: ByteBuffer(string: "\(n)"), historySize: 100, historyTTL: 60))
        }
        _ = node.broker.inner.publish(PublishRequest(channel: "r1", data: ByteBuffer(string: "1"), historySize: 100, historyTTL: 60))
        node.loop.run()
        let epochs = try (0..<2).map { try node.broker.inner.history(HistoryQuery(channel: "r\($0)", limit: 0)).wait().position.epoch }
        let subs = (0..<2).map { #""r\#($0)":{"offset":0,"epoch":"\#(epochs[$0])"}"# }.joined(separator: ",")
        let items = try Self.poll(node, subs)
        let r0 = items.first { $0["channel"]?.stringValue == "r0" }
        // Lost, and only it: the position is its own, so the next poll brings the ones after it.
        #expect(r0?["position"]?["recovered"] == .bool(false) && r0?["position"]?["offset"]?.intValue == 1, "\(items)")
        #expect(items.contains { $0["channel"]?.stringValue == "r1" && $0["pub"]?["offset"]?.intValue == 1 }, "\(items)")
        let next = try Self.poll(node, #""r0":{"offset":1,"epoch":"\#(epochs[0])"}"#)
        #expect(next.compactMap { $0["pub"]?["offset"]?.intValue } == [2, 3], "\(next)")
    }

    @Test("resubscribing while an ended recovery's read is out: no join or leave is announced for it, presence keeps the client")
    func resubscribeWhileAReadIsOut() throws {
        let (node, epochs) = try Self.node(channels: 1, perChannel: 2, size: 100) {
            $0.namespaces.defaults.joinLeave = true
            $0.namespaces.defaults.presence = true
        }
        let watcher = try node.session()
        try watcher.send(#"{"id":1,"connect":{}}"#)
        try watcher.send(#"{"id":2,"subscribe":{"channel":"r0"}}"#)
        let other = try node.session()
        try other.send(#"{"id":1,"connect":{}}"#)
        let client = try #require(try other.messages().first?["result"]?["client"])
        _ = try watcher.frames()
        try other.send([
            #"{"id":10,"subscribe":{"channel":"r0","since":{"offset":0,"epoch":"\#(epochs[0])"}}}"#,
            #"{"id":11,"unsubscribe":{"channel":"r0"}}"#,
            #"{"id":12,"subscribe":{"channel":"r0"}}"#,
        ].joined(separator: "\n"))
        let replies = try other.messages()
        #expect(replies.first { $0["id"]?.intValue == 12 }?["result"] != nil, "\(replies)")
        node.advance(by: PresenceSchedule.writeDelay)
        let pushes = try watcher.messages()
        #expect(pushes.compactMap { $0["join"]?["client"] } == [client], "one join, for the subscription that stays: \(pushes)")
        let leaves = pushes.compactMap { $0["leave"]?["client"] }
        #expect(leaves.count == 0, "\(pushes)")
        try watcher.send(#"{"id":3,"presence":{"channel":"r0"}}"#)
        let reply = try #require(try watcher.messages().first { $0["id"]?.intValue == 3 })
        guard case .object(let entries)? = reply["result"]?["clients"] else {
            Issue.record("\(reply)")
            return
        }
        #expect(entries.members.contains { .string($0.key) == client }, "\(reply)")
    }

    @Test("recoveries ended before their reads even started (the broker subscribe still out) give their places back")
    func endedBeforeTheReadStarted() throws {
        let (node, epochs) = try Self.node(channels: 10, perChannel: 2, size: 100)
        node.broker.delaysSubscribes = true
        let session = try Self.connected(node)
        var frame: [String] = []
        for c in 0..<4 {
            frame.append(Self.recovering(c, id: 10 + c, epochs))
            frame.append(#"{"id":\#(20 + c),"unsubscribe":{"channel":"r\#(c)"}}"#)
        }
        try session.send(frame.joined(separator: "\n"))
        _ = try session.messages()
        #expect(node.broker.recoveries.isEmpty, "left before their reads")
        frame = (4..<10).map { c in Self.recovering(c, id: 30 + c, epochs) }
        try session.send(frame.joined(separator: "\n"))
        let answers = try session.messages()
        for c in 4..<10 {
            #expect(answers.first { $0["id"]?.intValue == 30 + c }?["result"]?["recovered"] == .bool(true), "r\(c): \(answers)")
        }
    }

    @Test("a session that closes with recoveries waiting issues none of them")
    func closedSessionIssuesNoWaitingRead() throws {
        let (node, epochs) = try Self.node(channels: 10, perChannel: 2, size: 100)
        let channel = try node.openWebSocket()
        let session = TestSession(channel: channel, loop: node.loop)
        try session.send(#"{"id":1,"connect":{}}"#)
        _ = try session.messages()
        let frame = (0..<10).map { c in Self.recovering(c, id: 10 + c, epochs) }
        // Sent without running the loop: the reads in flight are not answered before the close.
        try channel.writeInbound(ByteBuffer(bytes: TestFrames.text(frame.joined(separator: "\n"))))
        _ = try? channel.finish(acceptAlreadyClosed: true)
        node.loop.run()
        #expect(node.broker.recoveries.count <= RecoveryReadWindow<SessionSubscription>.width)
    }

    @Test("a poll's recoveries go a few at a time and page through an answer smaller than what is missed: each publication once, in order, none said lost")
    func pollPagesThroughASmallAnswer() throws {
        // The answer's room is about 20,000 bytes; each channel has 3 publications of 5,000.
        let (node, epochs) = try Self.node(channels: 8, perChannel: 3, size: 5_000) { $0.outboundLimit = 20_000 }
        var positions: [String: (offset: Int, epoch: String)] = [:]
        for c in 0..<8 { positions["r\(c)"] = (0, epochs[c]) }
        var received: [String: [Int]] = [:]
        var first = true
        for _ in 0..<20 where positions.values.contains(where: { $0.offset < 3 }) {
            let subs = positions.map { #""\#($0.key)":{"offset":\#($0.value.offset),"epoch":"\#($0.value.epoch)"}"# }.joined(separator: ",")
            let body = #"{"subs":{\#(subs)},"timeout":0}"#
            let channel = try node.openHTTP()
            try channel.writeInbound(ByteBuffer(string:
                "POST /poll HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"))
            node.loop.run()
            let answer = String(decoding: channel.readAllOutbound(), as: UTF8.self)
            _ = try? channel.finish(acceptAlreadyClosed: true)
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer.prefix(200))")
            let json = try #require(answer.range(of: "\r\n\r\n").map { String(answer[$0.upperBound...]) })
            let items = try #require(try JSONParser().parse(Array(json.utf8)).arrayValue)
            for item in items {
                let name = try #require(item["channel"]?.stringValue)
                #expect(item["error"] == nil && item["position"]?["recovered"] == nil, "\(item)")
                if let offset = item["pub"]?["offset"]?.intValue {
                    #expect(offset == positions[name]!.offset + 1, "\(name): \(offset) after \(positions[name]!.offset)")
                    received[name, default: []].append(offset)
                    positions[name]!.offset = offset
                } else if let offset = item["position"]?["offset"]?.intValue {
                    positions[name]!.offset = offset
                }
            }
            if first {
                first = false
                #expect(node.broker.recoveries.count == 8)
                #expect(node.broker.mostInFlight == RecoveryReadWindow<SessionSubscription>.width)
            }
        }
        for c in 0..<8 { #expect(received["r\(c)"] == [1, 2, 3], "r\(c): \(received["r\(c)"] ?? [])") }
    }
}
