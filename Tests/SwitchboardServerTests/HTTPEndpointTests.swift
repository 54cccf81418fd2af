import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@testable import SwitchboardServer
import SwitchboardServerTesting
import Testing

@Suite("HTTP endpoints: the request guard, the poll's body, and the connection's request cycle")
struct HTTPEndpointTests {
    // MARK: TransportRequestGuard

    @Test("a draining node refuses new sessions (503, Retry-After, close) and still serves commands")
    func guardDraining() throws {
        let requestGuard = TransportRequestGuard(maximumBodySize: 100, isDraining: true)
        let refusal = try #require(requestGuard.refusal(.startsSession, body: ByteBuffer(string: "{}")))
        #expect(refusal.response.status == .serviceUnavailable)
        #expect(refusal.closesConnection)
        #expect(refusal.response.headers.contains { $0.0 == "Retry-After" && $0.1 == "1" })
        #expect(String(buffer: refusal.response.body).contains(#""code":100"#))
        #expect(String(buffer: refusal.response.body).contains(#""temporary":true"#))
        #expect(requestGuard.refusal(.servesRequest, body: ByteBuffer(string: "{}")) == nil)
        #expect(requestGuard.refusal(.startsSession, body: nil) != nil, "a WebSocket or GET stream has no body and is refused too")
    }

    @Test("an /rpc call is served while the node drains: its commands run (it is not a client to move)")
    func rpcWhileDraining() throws {
        let node = try EmbeddedNode()
        node.context.setDraining()
        let channel = try node.openHTTP()
        let body = #"{"id":1,"publish":{"channel":"c","data":1}}"#
        try channel.writeInbound(ByteBuffer(string:
            "POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"))
        node.loop.run()
        let answer = String(decoding: channel.readAllOutbound(), as: UTF8.self)
        #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
        #expect(answer.contains(#""id":1,"result""#), "\(answer)")
        #expect(!answer.contains("disconnect"), "\(answer)")
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }

    @Test("/rpc calls on one kept-alive connection share its command rate: past the burst, 111 and not executed; past 20 refusals, 3507 and the connection closed")
    func rpcCommandRateAcrossCalls() throws {
        // The bucket refills in real time: at the default 100/s, a test slowed to seconds between
        // calls (a loaded machine) would find it full again. Almost no refill; the default burst.
        var configuration = ServerConfiguration()
        configuration.limits.commandsPerSecond = 0.001
        let node = try EmbeddedNode(configuration: configuration)
        let channel = try node.openHTTP()
        let call = (1...100).map { #"{"id":\#($0),"publish":{"channel":"c","data":1}}"# }.joined(separator: "\n")
        func post() -> String {
            _ = try? channel.writeInbound(ByteBuffer(string:
                "POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(call.utf8.count)\r\n\r\n\(call)"))
            node.loop.run()
            return String(decoding: channel.readAllOutbound(), as: UTF8.self)
        }
        func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }
        // A burst of 200 (the default): two calls of 100 fit; the third is over it.
        for _ in 0..<2 {
            let answer = post()
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer.prefix(200))")
            #expect(count(#""result""#, in: answer) == 100)
        }
        let third = post()
        #expect(count(#""result""#, in: third) == 0, "the bucket has not refilled")
        #expect(count(#""code":111"#, in: third) >= 20)
        #expect(third.contains(#""disconnect":{"code":3507"#), "\(third.suffix(300))")
        #expect(third.contains("Connection: close") || third.contains("connection: close"))
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }

    /// A node whose history budget is `burst` bytes (refilled at 1 byte/s: not at all within a
    /// test), with channel `h` holding 10 publications of 10,001 bytes: each full read or
    /// recovery of it costs 100,010 bytes.
    static func budgetedNode<B: Broker>(burst: Double, makeBroker: (EmbeddedEventLoop) -> B) throws -> EmbeddedNode<B> {
        var configuration = ServerConfiguration()
        configuration.limits.historyBytesPerSecond = 1
        configuration.limits.historyBurstBytes = burst
        let node = try EmbeddedNode(configuration: configuration, makeBroker: makeBroker)
        for _ in 0..<10 {
            _ = node.broker.publish(PublishRequest(channel: "h", data: ByteBuffer(repeating: UInt8(ascii: "1"), count: 10_001), historySize: 10, historyTTL: 60))
        }
        node.loop.run()
        return node
    }

    static func budgetedNode(burst: Double) throws -> EmbeddedNode<MemoryBroker> {
        try Self.budgetedNode(burst: burst, makeBroker: { MemoryBroker(eventLoop: $0) })
    }

    @Test("history reads are held to the client address's budget of bytes, whatever connections and transports they come on (111 once it is spent)")
    func historyByteBudget() throws {
        let node = try Self.budgetedNode(burst: 1_000_000)
        // Each read returns 100,010 bytes: ten fit in the burst (the tenth takes it below zero), the
        // eleventh waits, though each call comes on a new connection.
        let call = #"{"id":1,"history":{"channel":"h","limit":10}}"#
        var answers: [String] = []
        for _ in 0..<11 {
            let channel = try node.openHTTP()
            try channel.writeInbound(ByteBuffer(string:
                "POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(call.utf8.count)\r\n\r\n\(call)"))
            node.loop.run()
            answers.append(String(decoding: channel.readAllOutbound(), as: UTF8.self))
            _ = try? channel.finish(acceptAlreadyClosed: true)
        }
        #expect(answers.prefix(10).allSatisfy { $0.contains(#""publications""#) })
        #expect(answers[10].contains(#""code":111"#), "\(answers[10].suffix(200))")

        // A WebSocket connection from the same address has no budget of its own.
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        _ = try session.frames()
        try session.send(#"{"id":2,"history":{"channel":"h","limit":10}}"#)
        let reply = try #require(try session.messages().first { $0["id"]?.intValue == 2 })
        #expect(reply["error"]?["code"]?.intValue == 111, "\(reply)")
    }

    @Test("presence reads draw on the address's budget of bytes read too: a presenceStats that reads a big table is charged for it, and once spent presence and history get 111")
    func presenceReadsChargeTheBudget() throws {
        let node = try Self.budgetedNode(burst: 50_000)
        // 300 entries of about 100 bytes each as a presence read counts them: ~30,000 bytes a read.
        let clients = (0..<300).map { ClientInfo(client: "client-\($0)-" + String(repeating: "c", count: 20), user: "user-\($0)") }
        _ = node.broker.addPresence(channel: "p", clients: clients, ttl: 60)
        node.loop.run()
        let perRead = ClientSession.presenceReadBytes(clients)
        #expect(perRead > 25_000 && perRead < 50_000)
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        _ = try session.messages()
        var answers: [JSONValue] = []
        for id in 2...4 {
            try session.send(#"{"id":\#(id),"presenceStats":{"channel":"p"}}"#)
            answers += try session.messages()
        }
        let byID = { (id: Int) in answers.first { $0["id"]?.intValue == id } }
        #expect(byID(2)?["result"]?["clients"]?.intValue == 300, "\(answers)")
        #expect(byID(3)?["result"]?["clients"]?.intValue == 300, "the second takes the budget below zero")
        #expect(byID(4)?["error"]?["code"]?.intValue == 111, "\(String(describing: byID(4)))")
        try session.send(#"{"id":5,"history":{"channel":"h","limit":1}}"#)
        let history = try #require(try session.messages().first { $0["id"]?.intValue == 5 })
        #expect(history["error"]?["code"]?.intValue == 111, "one budget for both: \(history)")
    }

    @Test("presence reads sent together cannot all start on one full budget, and asks of one channel's table while it is being read share the read")
    func presenceReadsSentTogether() throws {
        let node = try Self.budgetedNode(burst: 50_000, makeBroker: { LaterPresenceBroker(eventLoop: $0) })
        let clients = (0..<300).map { ClientInfo(client: "client-\($0)-" + String(repeating: "c", count: 20), user: "user-\($0)") }
        _ = node.broker.inner.addPresence(channel: "p", clients: clients, ttl: 60)
        _ = node.broker.inner.addPresence(channel: "q", clients: clients, ttl: 60)
        node.loop.run()
        func call(_ commands: [String]) throws -> String {
            let body = commands.enumerated().map { #"{"id":\#($0.offset + 1),\#($0.element)}"# }.joined(separator: "\n")
            let channel = try node.openHTTP()
            try channel.writeInbound(ByteBuffer(string:
                "POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"))
            node.loop.run()
            defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
            return String(decoding: channel.readAllOutbound(), as: UTF8.self)
        }
        // 100 asks in one call, all out before any read returns: one reservation spends the burst.
        let first = try call(Array(repeating: #""presenceStats":{"channel":"p"}"#, count: 100))
        #expect(first.components(separatedBy: #""clients":300"#).count - 1 == 1, "\(first.prefix(400))")
        #expect(first.components(separatedBy: #""code":111"#).count - 1 == 99)
        #expect(node.broker.presenceReads == 1)

        // With the default budget, 50 asks of one channel in one frame make one broker read, and one
        // of another channel one more.
        let open = try EmbeddedNode(makeBroker: { LaterPresenceBroker(eventLoop: $0) })
        _ = open.broker.inner.addPresence(channel: "p", clients: clients, ttl: 60)
        open.loop.run()
        let session = try open.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        _ = try session.messages()
        try session.send((2..<52).map { #"{"id":\#($0),"presenceStats":{"channel":"p"}}"# }.joined(separator: "\n") + "\n"
            + #"{"id":60,"presence":{"channel":"q"}}"#)
        let answers = try session.messages()
        #expect(answers.filter { $0["result"]?["clients"]?.intValue == 300 }.count == 50, "\(answers.prefix(3))")
        #expect(open.broker.presenceReads == 2)
    }

    @Test("recoveries read from the address's history budget too: a connect's and a poll's are charged what they read; spent, a recovering subscribe gets 111 and a recovering poll 429")
    func recoveriesChargeTheHistoryBudget() throws {
        let node = try Self.budgetedNode(burst: 250_000)
        let epoch = try node.broker.history(HistoryQuery(channel: "h", limit: 0)).wait().position.epoch
        let since = #"{"offset":0,"epoch":"\#(epoch)"}"#
        // Each recovery reads 100,010 bytes. A poll's and two connects' take the 250,000 below zero.
        let poll = #"{"subs":{"h":\#(since)},"timeout":0}"#
        func postPoll() throws -> String {
            let channel = try node.openHTTP()
            try channel.writeInbound(ByteBuffer(string:
                "POST /poll HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(poll.utf8.count)\r\n\r\n\(poll)"))
            node.loop.run()
            defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
            return String(decoding: channel.readAllOutbound(), as: UTF8.self)
        }
        let first = try postPoll()
        #expect(first.hasPrefix("HTTP/1.1 200") && first.components(separatedBy: #""pub":"#).count == 11, "\(first.prefix(300))")
        for id in 1...2 {
            let session = try node.session()
            try session.send(#"{"id":1,"connect":{"subs":{"h":\#(since)}}}"#)
            let reply = try #require(try session.messages().first { $0["id"]?.intValue == 1 }, "connect \(id)")
            #expect(reply["result"]?["subs"]?["h"]?["recovered"] == .bool(true), "a connect's recovery is never refused")
        }
        // Spent: a connect's recoveries are refused (temporary), a recovering subscribe too, a plain
        // one is not; a recovering poll is 429.
        let spent = try node.session()
        try spent.send(#"{"id":1,"connect":{"subs":{"h":\#(since),"other":{}}}}"#)
        let connectReply = try #require(try spent.messages().first { $0["id"]?.intValue == 1 })
        #expect(connectReply["result"]?["subs"]?["h"]?["error"]?["code"]?.intValue == 111, "\(connectReply)")
        #expect(connectReply["result"]?["subs"]?["other"]?["error"] == nil, "\(connectReply)")
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        try session.send(#"{"id":2,"subscribe":{"channel":"h","since":\#(since)}}"#)
        try session.send(#"{"id":3,"subscribe":{"channel":"other"}}"#)
        let replies = try session.messages()
        let refused = try #require(replies.first { $0["id"]?.intValue == 2 })
        #expect(refused["error"]?["code"]?.intValue == 111 && refused["error"]?["temporary"] == .bool(true), "\(refused)")
        #expect(replies.first { $0["id"]?.intValue == 3 }?["result"] != nil)
        let second = try postPoll()
        #expect(second.hasPrefix("HTTP/1.1 429"), "\(second.prefix(200))")
        #expect(second.contains("Retry-After: 1"))
    }

    @Test("a recovery is charged when its read completes, even when the subscriber is gone by then")
    func recoveryChargedWhenTheSubscriberLeft() throws {
        let node = try Self.budgetedNode(burst: 250_000, makeBroker: { DelayedHistoryBroker(eventLoop: $0) })
        let epoch = try node.broker.inner.history(HistoryQuery(channel: "h", limit: 0)).wait().position.epoch
        // A subscriber keeps the channel at the hub, so that each join reads at once.
        let keeper = try node.session()
        try keeper.send(#"{"id":1,"connect":{"subs":{"h":{}}}}"#)
        _ = try keeper.messages()
        // Three subscribes, each unsubscribed in the same frame: gone before their reads of 100,010
        // bytes are answered (a broker answering on a later loop turn, as Redis does).
        let leaving = try node.session()
        try leaving.send(#"{"id":1,"connect":{}}"#)
        _ = try leaving.messages()
        for i in 0..<3 {
            try leaving.send(#"{"id":\#(10 + 2 * i),"subscribe":{"channel":"h","since":{"offset":0,"epoch":"\#(epoch)"}}}"# + "\n"
                + #"{"id":\#(11 + 2 * i),"unsubscribe":{"channel":"h"}}"#)
        }
        _ = try leaving.messages()
        #expect(node.broker.recoveryReads >= 3)
        try leaving.send(#"{"id":2,"history":{"channel":"h","limit":1}}"#)
        let reply = try #require(try leaving.messages().first { $0["id"]?.intValue == 2 })
        #expect(reply["error"]?["code"]?.intValue == 111, "\(reply)")
    }

    @Test("a body over the size is 413 and one that is not UTF-8 is 400, whatever the purpose; the connection stays")
    func guardBody() throws {
        let requestGuard = TransportRequestGuard(maximumBodySize: 4, isDraining: false)
        #expect(requestGuard.refusal(.startsSession, body: ByteBuffer(string: "1234")) == nil)
        #expect(requestGuard.refusal(.servesRequest, body: nil) == nil)
        let large = try #require(requestGuard.refusal(.servesRequest, body: ByteBuffer(string: "12345")))
        #expect(large.response.status == .payloadTooLarge)
        #expect(String(buffer: large.response.body).contains(#""code":106"#))
        #expect(!large.closesConnection)
        let notUTF8 = try #require(requestGuard.refusal(.startsSession, body: ByteBuffer(bytes: [0x22, 0xC3, 0x28, 0x22])))
        #expect(notUTF8.response.status == .badRequest)
        #expect(String(buffer: notUTF8.response.body).contains(#""code":107"#))
    }

    // MARK: LongPollEndpoint.request

    @Test("a poll's body: subs, timeout, client and token, each optional; the body's token wins over the bearer's")
    func pollRequest() throws {
        let empty = try LongPollEndpoint.request(body: ByteBuffer(string: "{}"), bearer: nil, maximumSubscriptions: 8).get()
        #expect(empty == LongPollEndpoint.Request(params: ConnectParams(), timeout: LongPollEndpoint.defaultTimeout, client: ""))
        let full = try LongPollEndpoint.request(
            body: ByteBuffer(string: #"{"subs":{"a":{"offset":3,"epoch":"e","token":"sa"},"b":{},"c":{"token":null}},"timeout":0,"client":"c1","token":"t"}"#),
            bearer: "bearer", maximumSubscriptions: 8
        ).get()
        #expect(full.timeout == 0)
        #expect(full.client == "c1")
        #expect(full.params.token == "t")
        #expect(full.params.subs.map(\.channel) == ["a", "b", "c"])
        #expect(full.params.subs[0].since == StreamPosition(offset: 3, epoch: "e"))
        #expect(full.params.subTokens == ["a": "sa"])
        let bearer = try LongPollEndpoint.request(body: ByteBuffer(string: "{}"), bearer: "bearer", maximumSubscriptions: 8).get()
        #expect(bearer.params.token == "bearer")
    }

    @Test("a poll carries at most ConnectParams.maximumSubTokens subscription tokens: each is a signature check no bucket paces")
    func pollSubscriptionTokenCap() throws {
        func body(_ count: Int) -> ByteBuffer {
            ByteBuffer(string: "{\"subs\":{" + (0..<count).map { #""c\#($0)":{"token":"t\#($0)"}"# }.joined(separator: ",") + ",\"plain\":{}}}")
        }
        let most = ConnectParams.maximumSubTokens
        let taken = try LongPollEndpoint.request(body: body(most), bearer: nil, maximumSubscriptions: 1000).get()
        #expect(taken.params.subTokens.count == most && taken.params.subs.count == most + 1)
        switch LongPollEndpoint.request(body: body(most + 1), bearer: nil, maximumSubscriptions: 1000) {
        case .success: Issue.record("\(most + 1) subscription tokens taken")
        case .failure(let error): #expect(error.message.contains("at most \(most) subscription tokens"), "\(error.message)")
        }
    }

    @Test("a poll's body is refused with a reason, never trapped on", arguments: [
        ("[]", "JSON object"),
        ("not json", "JSON object"),
        (#"{"timeout":-1}"#, "timeout"),
        (#"{"timeout":61}"#, "timeout"),
        (#"{"timeout":1e308}"#, "timeout"),
        (#"{"timeout":"5"}"#, "timeout"),
        (#"{"client":7}"#, "client"),
        (#"{"subs":{"a":{},"b":{},"c":{}}}"#, "at most 2 channels"),
        (#"{"subs":{"bad channel\u0000":{}}}"#, ""),
        (#"{"subs":{"a":{"offset":-1,"epoch":"e"}}}"#, ""),
        (#"{"subs":{"a":{"token":7}}}"#, "token"),
        (#"{"subs":{"a":{"token":["t"]}}}"#, "token"),
        (#"{"subs":{"a":{},"a":{"token":"t"}}}"#, "more than once"),
    ])
    func pollRequestRefused(_ body: String, _ reason: String) {
        switch LongPollEndpoint.request(body: ByteBuffer(string: body), bearer: nil, maximumSubscriptions: 2) {
        case .success(let request):
            Issue.record("accepted \(body): \(request)")
        case .failure(let error):
            #expect(error.code == .badRequest || error.code == .limitExceeded)
            #expect(reason.isEmpty || error.message.contains(reason), "\(error.message)")
        }
    }

    @Test("a client id over 64 bytes is refused")
    func pollClientSize() {
        let long = String(repeating: "x", count: LongPollEndpoint.maximumClientSize + 1)
        let result = LongPollEndpoint.request(body: ByteBuffer(string: #"{"client":"\#(long)"}"#), bearer: nil, maximumSubscriptions: 2)
        #expect(throws: SwitchboardError.self) { try result.get() }
    }

    // MARK: The connection's request cycle, on EmbeddedChannel

    static func exchange(_ channel: EmbeddedChannel, _ node: EmbeddedNode<MemoryBroker>, _ text: String) throws -> String {
        try channel.writeInbound(ByteBuffer(string: text))
        node.loop.run()
        return String(decoding: channel.readAllOutbound(), as: UTF8.self)
    }

    @Test("kept-alive requests are answered one after the other, a poll among them; Connection: close ends it")
    func keepAliveCycle() throws {
        let node = try EmbeddedNode()
        defer { node.shutdown() }
        let channel = try node.openHTTP()
        let first = try Self.exchange(channel, node, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(first.hasPrefix("HTTP/1.1 200 OK\r\n"))
        let body = #"{"subs":{"chat":{}},"timeout":0}"#
        let poll = try Self.exchange(channel, node, "POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        #expect(poll.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(poll.contains(#""chat""#))
        #expect(channel.isActive)
        let last = try Self.exchange(channel, node, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(last.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(last.contains("Connection: close"))
        node.loop.run()
        #expect(!channel.isActive)
    }

    /// The position a poll's answer gives `channel` (`{"offset", "epoch"}` anywhere in its objects).
    static func position(in objects: [[String: Any]], channel: String) -> (offset: Int, epoch: String)? {
        func find(_ value: Any) -> (offset: Int, epoch: String)? {
            if let object = value as? [String: Any] {
                if let offset = object["offset"] as? Int, let epoch = object["epoch"] as? String { return (offset, epoch) }
                for (_, member) in object { if let found = find(member) { return found } }
            } else if let array = value as? [Any] {
                for element in array { if let found = find(element) { return found } }
            }
            return nil
        }
        return objects.lazy.filter { "\($0)".contains(channel) }.compactMap(find).first
    }

    @Test("a waiting poll is counted until its connection goes, then the address may poll again")
    func pollCountReleasedOnClose() throws {
        var configuration = ServerConfiguration()
        configuration.maxPollsPerIP = 1
        let node = try EmbeddedNode(configuration: configuration)
        defer { node.shutdown() }
        // A poll without a position is answered at once with the channel's position; one at that
        // position waits for the next publication.
        let zero = #"{"subs":{"chat":{}},"timeout":0}"#
        let first = try Self.exchange(try node.openHTTP(), node, "POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: \(zero.utf8.count)\r\nConnection: close\r\n\r\n\(zero)")
        let answer = try #require(first.split(separator: "\r\n\r\n", maxSplits: 1).last)
        let objects = try #require(try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [[String: Any]])
        let position = try #require(Self.position(in: objects, channel: "chat"), "\(answer)")
        let body = #"{"subs":{"chat":{"offset":\#(position.offset),"epoch":"\#(position.epoch)"}},"timeout":30}"#
        let request = "POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        let waiting = try node.openHTTP()
        #expect(try Self.exchange(waiting, node, request).isEmpty, "the poll waits")
        let second = try node.openHTTP()
        let refused = try Self.exchange(second, node, request)
        #expect(refused.hasPrefix("HTTP/1.1 429 "))
        _ = try? waiting.close().wait()
        node.loop.run()
        let third = try node.openHTTP()
        let again = try Self.exchange(third, node, "POST /poll HTTP/1.1\r\nHost: x\r\nContent-Length: \(zero.utf8.count)\r\n\r\n\(zero)")
        #expect(again.hasPrefix("HTTP/1.1 200 "))
    }
}

/// History answers arrive on a later loop turn, as Redis's do.
final class DelayedHistoryBroker: ForwardingBroker, @unchecked Sendable {
    /// Reads from a position (recoveries) answered so far.
    private(set) var recoveryReads = 0

    override func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        let promise = self.eventLoop.makePromise(of: HistoryResult.self)
        let inner = self.inner
        self.eventLoop.execute {
            inner.history(query).map { result in
                if query.sinceOffset != nil { self.recoveryReads += 1 }
                return result
            }.cascade(to: promise)
        }
        return promise.futureResult
    }
}

/// A memory broker whose presence reads answer on a later loop turn (as Redis does), counted.
final class LaterPresenceBroker: ForwardingBroker, @unchecked Sendable {
    private(set) var presenceReads = 0

    override func presence(channel: String) -> EventLoopFuture<[ClientInfo]> {
        self.presenceReads += 1
        let promise = self.eventLoop.makePromise(of: [ClientInfo].self)
        let inner = self.inner
        self.eventLoop.execute { inner.presence(channel: channel).cascade(to: promise) }
        return promise.futureResult
    }
}
