import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@_spi(Harness) @testable import SwitchboardServer
@_spi(Harness) import SwitchboardServerTesting
import Testing

extension EmbeddedNode {
    /// What every session and handler of the node shares.
    var context: NodeContext { self.harness.context }

    func session() throws -> TestSession {
        try TestSession(channel: self.openWebSocket(), loop: self.loop)
    }
}

/// A memory broker that records each history read and its answer.
final class HistoryRecordingBroker: ForwardingBroker, @unchecked Sendable {
    var reads: [(query: HistoryQuery, result: HistoryResult)] = []

    override func history(_ query: HistoryQuery) -> EventLoopFuture<HistoryResult> {
        super.history(query).map { result in
            self.reads.append((query, result))
            return result
        }
    }
}

/// One client session with its frame handler, fed client frames.
struct TestSession {
    let channel: EmbeddedChannel
    let loop: EmbeddedEventLoop

    func send(_ text: String) throws {
        try channel.writeInbound(ByteBuffer(bytes: TestFrames.text(text)))
        loop.run()
    }

    /// Every frame written so far, after letting the loop run.
    func frames() throws -> [TestFrames.ServerFrame] {
        loop.run()
        var all = ByteBuffer()
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { all.writeBuffer(&buffer) }
        return TestFrames.parse(&all)
    }

    /// Every JSON object received, in order (a frame may carry several, separated by newlines).
    func messages() throws -> [JSONValue] {
        try frames().filter { $0.opcode == 0x1 }.flatMap { try JSONParser().parseSequence($0.payload) }
    }
}

@Suite("ClientSession")
struct ClientSessionTests {
    @Test("a command before connect closes with 3501")
    func commandBeforeConnect() throws {
        let node = try EmbeddedNode()
        let session = try node.session()
        try session.send(#"{"id":1,"ping":{}}"#)
        #expect(try session.frames().last?.closeCode == 3501)
    }

    @Test("malformed JSON closes with 3501")
    func malformed() throws {
        let node = try EmbeddedNode()
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        try session.send(#"{"id":2,"ping""#)
        let frames = try session.frames()
        #expect(frames.last?.closeCode == 3501)
    }

    @Test("connect, unknown method (104) keeps the connection, ping answers")
    func connectAndUnknown() throws {
        let node = try EmbeddedNode()
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        try session.send(#"{"id":2,"frobnicate":{}}"#)
        try session.send(#"{"id":3,"ping":{}}"#)
        let messages = try session.messages()
        #expect(messages.count == 3)
        #expect(messages[0]["result"]?["client"]?.stringValue?.hasPrefix("nharness-") == true)
        #expect(messages[1]["error"]?["code"] == .number("104"))
        #expect(messages[2]["id"] == .number("3"))
        #expect(messages[2]["result"] == .object(JSONObject()))
    }

    @Test("several commands in one frame, newline separated, get replies in order")
    func batchedCommands() throws {
        let node = try EmbeddedNode()
        let session = try node.session()
        try session.send("{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"a\"}}\n{\"id\":3,\"ping\":{}}")
        let ids = try session.messages().compactMap { $0["id"]?.intValue }
        #expect(ids == [1, 2, 3])
    }

    @Test("subscribers get publications once each, in order, from one shared frame")
    func fanout() throws {
        let node = try EmbeddedNode()
        let a = try node.session()
        let b = try node.session()
        for s in [a, b] {
            try s.send(#"{"id":1,"connect":{}}"#)
            try s.send(#"{"id":2,"subscribe":{"channel":"news"}}"#)
        }
        _ = try a.frames()
        _ = try b.frames()
        for i in 1...5 {
            _ = node.broker.publish(PublishRequest(channel: "news", data: ByteBuffer(string: "\(i)"), historySize: 10, historyTTL: 60))
        }
        for s in [a, b] {
            let pubs = try s.messages().compactMap { $0["pub"] }
            #expect(pubs.map { $0["offset"]?.intValue } == [1, 2, 3, 4, 5])
            #expect(pubs.map { $0["data"] } == (1...5).map { JSONValue.number("\($0)") })
        }
    }

    @Test("recovery: exactly the missed publications, then live with no duplicate at the seam")
    func recovery() throws {
        let node = try EmbeddedNode()
        for i in 1...3 {
            _ = node.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "\(i)"), historySize: 10, historyTTL: 60))
        }
        node.loop.run()
        let epoch = try node.broker.history(HistoryQuery(channel: "c", limit: 0)).wait().position.epoch
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"c","since":{"offset":1,"epoch":"\#(epoch)"}}}"#)
        _ = node.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "4"), historySize: 10, historyTTL: 60))
        let messages = try s.messages()
        let reply = messages.first { $0["id"] == .number("2") }
        #expect(reply?["result"]?["recovered"] == .bool(true))
        #expect(reply?["result"]?["publications"]?.arrayValue?.map { $0["offset"]?.intValue } == [2, 3])
        #expect(messages.compactMap { $0["pub"]?["offset"]?.intValue } == [4])
    }

    @Test("a recovery larger than the reply's room is answered as not recovered (the client resyncs), one that fits as recovered; a connect's subscriptions share the room")
    func recoveryIsBoundedByTheReplyRoom() throws {
        var configuration = ServerConfiguration()
        configuration.outboundLimit = 8192  // a reply's room: 4,096 bytes
        let node = try EmbeddedNode(configuration: configuration)
        let payload = ByteBuffer(string: "\"" + String(repeating: "x", count: 500) + "\"")
        for channel in ["big", "a", "b"] {
            for _ in 1...10 {
                _ = node.broker.publish(PublishRequest(channel: channel, data: payload, historySize: 20, historyTTL: 60))
            }
        }
        node.loop.run()
        let epoch = try node.broker.history(HistoryQuery(channel: "big", limit: 0)).wait().position.epoch
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        // Ten publications of 500 bytes: more than 4,096 bytes. Not recovered, at the top position.
        try s.send(#"{"id":2,"subscribe":{"channel":"big","since":{"offset":0,"epoch":"\#(epoch)"}}}"#)
        // Two of them fit.
        try s.send(#"{"id":3,"subscribe":{"channel":"a","since":{"offset":8,"epoch":"\#(try node.broker.history(HistoryQuery(channel: "a", limit: 0)).wait().position.epoch)"}}}"#)
        let messages = try s.messages()
        let big = try #require(messages.first { $0["id"] == .number("2") }?["result"])
        #expect(big["recovered"] == .bool(false))
        #expect(big["publications"]?.arrayValue?.isEmpty == true)
        #expect(big["offset"]?.intValue == 10)
        let small = try #require(messages.first { $0["id"] == .number("3") }?["result"])
        #expect(small["recovered"] == .bool(true))
        #expect(small["publications"]?.arrayValue?.map { $0["offset"]?.intValue } == [9, 10])

        // A connect recovering six publications on each of two channels: each alone fits
        // (about 3,600 bytes), both do not; exactly one is recovered, whole.
        let c = try node.session()
        let positions = try ["a", "b"].map { try node.broker.history(HistoryQuery(channel: $0, limit: 0)).wait().position.epoch }
        try c.send(#"{"id":1,"connect":{"subs":{"a":{"offset":4,"epoch":"\#(positions[0])"},"b":{"offset":4,"epoch":"\#(positions[1])"}}}}"#)
        let subs = try #require(try c.messages().first { $0["id"] == .number("1") }?["result"]?["subs"])
        let results = [subs["a"], subs["b"]]
        #expect(results.filter { $0?["recovered"] == .bool(true) }.count == 1)
        #expect(results.filter { $0?["recovered"] == .bool(false) }.count == 1)
        for result in results where result?["recovered"] == .bool(true) {
            #expect(result?["publications"]?.arrayValue?.map { $0["offset"]?.intValue } == Array(5...10))
        }
    }

    @Test("a recovery reads from the broker no more than its reply has room for: a connect naming channels with large histories is not read whole into memory")
    func recoveryReadIsBoundedByTheReplyRoom() throws {
        var configuration = ServerConfiguration()
        configuration.outboundLimit = 8192  // a reply's room: 4,096 bytes
        let node = try EmbeddedNode(configuration: configuration, makeBroker: { HistoryRecordingBroker(eventLoop: $0) })
        let payload = ByteBuffer(string: "\"" + String(repeating: "x", count: 998) + "\"")
        for channel in ["a", "b"] {
            for _ in 1...20 {
                _ = node.broker.publish(PublishRequest(channel: channel, data: payload, historySize: 20, historyTTL: 60))
            }
        }
        node.loop.run()
        let epochs = try ["a", "b"].map { try node.broker.inner.history(HistoryQuery(channel: $0, limit: 0)).wait().position.epoch }
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{"subs":{"a":{"offset":0,"epoch":"\#(epochs[0])"},"b":{"offset":0,"epoch":"\#(epochs[1])"}}}}"#)
        let subs = try #require(try s.messages().first { $0["id"] == .number("1") }?["result"]?["subs"])
        #expect(subs["a"]?["recovered"] == .bool(false))
        #expect(subs["b"]?["recovered"] == .bool(false))
        #expect(subs["a"]?["offset"]?.intValue == 20)
        // Each read asked for at most the room and got what fits it (three of twenty), not 20 KB.
        let recovering = node.broker.reads.filter { $0.query.sinceOffset == 0 }
        #expect(recovering.count == 2)
        #expect(recovering.allSatisfy { $0.query.maximumBytes == 4096 })
        #expect(recovering.allSatisfy { $0.result.truncated && $0.result.publications.count == 3 })
    }

    @Test("a history command reads from the broker no more than its answer has room for, and answers 106 when that is not all")
    func historyReadIsBoundedByTheAnswerRoom() throws {
        var configuration = ServerConfiguration()
        configuration.outboundLimit = 8192  // an answer's room: 4,096 bytes
        let node = try EmbeddedNode(configuration: configuration, makeBroker: { HistoryRecordingBroker(eventLoop: $0) })
        let payload = ByteBuffer(string: "\"" + String(repeating: "x", count: 998) + "\"")
        for _ in 1...20 {
            _ = node.broker.publish(PublishRequest(channel: "big", data: payload, historySize: 20, historyTTL: 60))
        }
        node.loop.run()
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        _ = try s.messages()
        for (id, reverse) in [(2, false), (3, true)] {
            try s.send(#"{"id":\#(id),"history":{"channel":"big","limit":20,"reverse":\#(reverse)}}"#)
            let reply = try #require(try s.messages().first { $0["id"] == .number("\(id)") })
            #expect(reply["error"]?["code"]?.intValue == 106)
        }
        // Each read asked for at most the room and got what fits it (three of twenty), not 20 KB.
        let reads = node.broker.reads.filter { $0.query.channel == "big" && $0.query.limit == 20 }
        #expect(reads.count == 2)
        #expect(reads.allSatisfy { $0.query.maximumBytes == 4096 && $0.result.truncated && $0.result.publications.count == 4 })
        // One that fits is answered whole: 17 publications of 200 bytes take about 3,900 of the
        // 4,096 (each written with about 24 bytes beside its data; counted at 96 each, as a
        // recovery counts them, the read would have stopped at 13 and answered 106).
        let small = ByteBuffer(string: "\"" + String(repeating: "y", count: 198) + "\"")
        for _ in 1...17 {
            _ = node.broker.publish(PublishRequest(channel: "small", data: small, historySize: 20, historyTTL: 60))
        }
        node.loop.run()
        try s.send(#"{"id":4,"history":{"channel":"small","limit":17}}"#)
        let answer = try #require(try s.messages().first { $0["id"] == .number("4") })
        #expect(answer["result"]?["publications"]?.arrayValue?.count == 17, "\(answer)")
    }

    @Test("a recovery's publications are weighed with their client info as written, not at the info's cap")
    func recoveryWeighsInfoAsWritten() throws {
        var configuration = ServerConfiguration()
        configuration.outboundLimit = 4096  // a reply's room: 2,048 bytes
        let node = try EmbeddedNode(configuration: configuration)
        let info = ClientInfo(client: "c1", user: "u1", info: .object(JSONObject([("name", .string("al"))])))
        for _ in 1...5 {
            _ = node.broker.publish(PublishRequest(channel: "c", data: ByteBuffer(string: "\"" + String(repeating: "x", count: 98) + "\""), info: info, historySize: 20, historyTTL: 60))
        }
        node.loop.run()
        let epoch = try node.broker.history(HistoryQuery(channel: "c", limit: 0)).wait().position.epoch
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"c","since":{"offset":0,"epoch":"\#(epoch)"}}}"#)
        let reply = try #require(try s.messages().first { $0["id"] == .number("2") }?["result"])
        #expect(reply["recovered"] == .bool(true))
        #expect(reply["publications"]?.arrayValue?.count == 5)
    }

    @Test("a subscription ended before the hub made it still gets its reply: later replies are not held behind it")
    func subscriptionEndedWhileJoining() throws {
        let node = try EmbeddedNode()
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        _ = try s.messages()
        // In one frame: the hub answers the subscribe only after the unsubscribe ended it.
        try s.send(#"{"id":2,"subscribe":{"channel":"c"}}"# + "\n" + #"{"id":3,"unsubscribe":{"channel":"c"}}"# + "\n" + #"{"id":4,"ping":{}}"#)
        let messages = try s.messages()
        #expect(messages.compactMap { $0["id"]?.intValue } == [2, 3, 4])
        #expect(messages.first { $0["id"] == .number("2") }?["error"]?["code"]?.intValue == 108)
    }

    @Test("commands the server cannot read count against the command rate like any other")
    func invalidCommandsAreRateLimited() throws {
        var configuration = ServerConfiguration()
        configuration.limits.commandsPerSecond = 1
        configuration.limits.commandBurst = 3
        let node = try EmbeddedNode(configuration: configuration)
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        _ = try s.frames()
        // A frame of many commands no server knows, each answered with an error.
        try s.send(Array(repeating: #"{"id":2,"x":1}"#, count: 40).joined(separator: "\n"))
        let frames = try s.frames()
        let errors = frames.filter { $0.opcode == 0x1 }.flatMap { (try? JSONParser().parseSequence($0.payload)) ?? [] }.compactMap { $0["error"]?["code"]?.intValue }
        #expect(errors.contains(111) || frames.contains { $0.closeCode == 3507 })
        #expect(errors.count < 40)
    }

    @Test("a flood of pongs ({}) counts against the command rate: past it the connection is closed with 3507, before connect too")
    func pongFloodIsRateLimited() throws {
        var configuration = ServerConfiguration()
        configuration.limits.commandsPerSecond = 1
        configuration.limits.commandBurst = 3
        let node = try EmbeddedNode(configuration: configuration)
        let s = try node.session()
        // No connect: pongs cost no reply, and nothing else limited them.
        try s.send(Array(repeating: "{}", count: 40).joined(separator: "\n"))
        #expect(try s.frames().contains { $0.closeCode == 3507 })
    }

    @Test("too many subscriptions: 106; already subscribed: 105; bad channel: 107")
    func limits() throws {
        var configuration = ServerConfiguration()
        configuration.maxSubscriptions = 2
        let node = try EmbeddedNode(configuration: configuration)
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"a"}}"#)
        try s.send(#"{"id":3,"subscribe":{"channel":"a"}}"#)
        try s.send(#"{"id":4,"subscribe":{"channel":"b"}}"#)
        try s.send(#"{"id":5,"subscribe":{"channel":"c"}}"#)
        try s.send(#"{"id":6,"subscribe":{"channel":"\#(String(repeating: "x", count: 256))"}}"#)
        let codes = try s.messages().filter { $0["id"] != nil }.map { $0["error"]?["code"]?.intValue }
        #expect(codes == [nil, nil, 105, nil, 106, 107])
    }

    @Test("publications of one channel in one tick go out as one frame, newline separated, in order")
    func coalescing() throws {
        let node = try EmbeddedNode()
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"subscribe":{"channel":"burst"}}"#)
        _ = try s.frames()
        for i in 1...10 {
            _ = node.broker.publish(PublishRequest(channel: "burst", data: ByteBuffer(string: "\(i)"), historySize: 100, historyTTL: 60))
        }
        let frames = try s.frames().filter { $0.opcode == 0x1 }
        #expect(frames.count == 1)
        let pubs = try frames.flatMap { try JSONParser().parseSequence($0.payload) }.compactMap { $0["pub"] }
        #expect(pubs.map { $0["offset"]?.intValue } == (1...10).map { Optional($0) })
    }

    @Test("a publish reply comes after an earlier subscribe reply")
    func replyOrder() throws {
        let node = try EmbeddedNode()
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.channel.writeInbound(ByteBuffer(bytes:
            TestFrames.text(#"{"id":2,"subscribe":{"channel":"x","since":{"offset":0,"epoch":"zz"}}}"#)
            + TestFrames.text(#"{"id":3,"publish":{"channel":"x","data":1}}"#)
            + TestFrames.text(#"{"id":4,"ping":{}}"#)))
        let ids = try s.messages().compactMap { $0["id"]?.intValue }
        #expect(ids == [1, 2, 3, 4])
    }

    @Test("join and leave reach other subscribers")
    func joinLeave() throws {
        var configuration = ServerConfiguration()
        configuration.namespaces.defaults.joinLeave = true
        let node = try EmbeddedNode(configuration: configuration)
        let a = try node.session()
        let b = try node.session()
        try a.send(#"{"id":1,"connect":{}}"#)
        try a.send(#"{"id":2,"subscribe":{"channel":"room"}}"#)
        try b.send(#"{"id":1,"connect":{}}"#)
        let bClient = try b.messages()[0]["result"]?["client"]
        _ = try a.frames()
        try b.send(#"{"id":2,"subscribe":{"channel":"room"}}"#)
        try b.send(#"{"id":3,"unsubscribe":{"channel":"room"}}"#)
        let pushes = try a.messages()
        #expect(pushes.compactMap { $0["join"]?["client"] } == [bClient])
        #expect(pushes.compactMap { $0["leave"]?["client"] } == [bClient])
    }

    @Test("publish is refused where the namespace forbids it (103)")
    func publishForbidden() throws {
        var configuration = ServerConfiguration()
        var locked = NamespaceOptions()
        locked.publish = false
        configuration.namespaces.namespaces["feed"] = locked
        let node = try EmbeddedNode(configuration: configuration)
        let s = try node.session()
        try s.send(#"{"id":1,"connect":{}}"#)
        try s.send(#"{"id":2,"publish":{"channel":"feed:x","data":1}}"#)
        try s.send(#"{"id":3,"publish":{"channel":"other","data":1}}"#)
        let messages = try s.messages()
        #expect(messages[1]["error"]?["code"] == .number("103"))
        #expect(messages[2]["result"]?["offset"] == .number("1"))
    }
}

@Suite("Session lifetime")
struct SessionLifetimeTests {
    @Test("a session is freed once its connection closes (it must not keep its context, which keeps it)")
    func freedAfterClose() throws {
        let node = try EmbeddedNode()
        weak var weakSession: ClientSession?
        weak var weakChannel: EmbeddedChannel?
        do {
            let channel = EmbeddedChannel(loop: node.loop)
            let session = ClientSession(node: node.context, fanout: node.context.fanouts[0])
            try channel.pipeline.syncOperations.addHandler(WebSocketFrameHandler(maximumMessageSize: 65536))
            try channel.pipeline.syncOperations.addHandler(session)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try channel.writeInbound(ByteBuffer(bytes: TestFrames.text(#"{"id":1,"connect":{"subs":{"a":{}}}}"#)))
            node.loop.run()
            weakSession = session
            weakChannel = channel
            _ = try channel.finish(acceptAlreadyClosed: true)
            node.loop.run()
        }
        node.loop.run()
        #expect(weakSession == nil, "the session outlived its connection")
        #expect(weakChannel == nil, "the channel outlived its connection")
    }
}
