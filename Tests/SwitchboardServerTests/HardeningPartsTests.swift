import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@_spi(Harness) @testable import SwitchboardServer
import SwitchboardServerTesting
import Testing

/// A memory broker whose channel subscribes complete only when the test says so,
/// and which counts what the node holds at it.
final class HeldSubscribeBroker: ForwardingBroker, @unchecked Sendable {
    /// Subscribes in flight, by channel.
    var pending: [String: EventLoopPromise<Void>] = [:]
    /// Channels subscribed at the broker now (subscribe completed, no unsubscribe since).
    var held: Set<String> = []

    /// Completes the subscribe in flight for `channel`.
    func completeSubscribe(_ channel: String) {
        guard let promise = self.pending.removeValue(forKey: channel) else { return }
        self.inner.subscribe(channel: channel).whenSuccess {
            self.held.insert(channel)
            promise.succeed()
        }
    }

    override func subscribe(channel: String) -> EventLoopFuture<Void> {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.pending[channel] = promise
        return promise.futureResult
    }

    override func unsubscribe(channel: String) -> EventLoopFuture<Void> {
        self.held.remove(channel)
        return self.inner.unsubscribe(channel: channel)
    }
}

extension EmbeddedNode {
    /// The hub's figures (its future completes once the embedded loop runs).
    func statistics() throws -> HubStatistics {
        let future = self.context.hub.statistics()
        self.loop.run()
        return try future.wait()
    }
}

@Suite("Hub broker subscriptions")
struct HubBrokerSubscriptionTests {
    @Test("a client that leaves while the broker subscribe is in flight leaves the node unsubscribed")
    func leaveDuringSubscribe() throws {
        let node = try EmbeddedNode(makeBroker: { HeldSubscribeBroker(eventLoop: $0) })
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        try session.send(#"{"id":2,"subscribe":{"channel":"room"}}"#)
        #expect(node.broker.pending["room"] != nil)
        try session.send(#"{"id":3,"unsubscribe":{"channel":"room"}}"#)
        node.broker.completeSubscribe("room")
        node.loop.run()
        #expect(node.broker.held.isEmpty)
        let stats = try node.statistics()
        #expect(stats.channels == 0)
        #expect(stats.subscriptions == 0)
    }

    @Test("a client that joins after everyone left mid-subscribe is subscribed and gets publications")
    func rejoinDuringSubscribe() throws {
        let node = try EmbeddedNode(makeBroker: { HeldSubscribeBroker(eventLoop: $0) })
        let first = try node.session()
        try first.send(#"{"id":1,"connect":{}}"#)
        try first.send(#"{"id":2,"subscribe":{"channel":"room"}}"#)
        try first.send(#"{"id":3,"unsubscribe":{"channel":"room"}}"#)
        let second = try node.session()
        try second.send(#"{"id":1,"connect":{}}"#)
        try second.send(#"{"id":2,"subscribe":{"channel":"room"}}"#)
        node.broker.completeSubscribe("room")
        node.loop.run()
        #expect(node.broker.held == ["room"])
        _ = try second.messages()
        try first.send(#"{"id":4,"publish":{"channel":"room","data":{"n":1}}}"#)
        let pushes = try second.messages().filter { $0["pub"] != nil }
        #expect(pushes.count == 1)
    }

    @Test("the publications buffered for a join are released when the join leaves")
    func bufferReleased() throws {
        let node = try EmbeddedNode(makeBroker: { HeldSubscribeBroker(eventLoop: $0) })
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        try session.send(#"{"id":2,"subscribe":{"channel":"room"}}"#)
        try session.send(#"{"id":3,"unsubscribe":{"channel":"room"}}"#)
        node.broker.completeSubscribe("room")
        node.loop.run()
        #expect(try node.statistics().channels == 0)
    }
}

@Suite("Connection caps")
struct ConnectionCountsTests {
    @Test("the node cap and the per-address cap are each enforced, and releases make room again")
    func caps() {
        var counts = ConnectionCounts(maximum: 3, maximumPerAddress: 2)
        #expect(counts.admit(address: "a") == .admitted)
        #expect(counts.admit(address: "a") == .admitted)
        #expect(counts.admit(address: "a") == .addressFull)
        #expect(counts.admit(address: "b") == .admitted)
        #expect(counts.admit(address: "c") == .nodeFull)
        counts.release(address: "a")
        #expect(counts.admit(address: "c") == .admitted)
        #expect(counts.total == 3)
    }

    @Test("the per-address table keeps only addresses with a connection open")
    func tableBounded() {
        var counts = ConnectionCounts(maximum: 100_000, maximumPerAddress: 10)
        for i in 0..<1000 { #expect(counts.admit(address: "10.0.\(i / 256).\(i % 256)") == .admitted) }
        for i in 0..<1000 { counts.release(address: "10.0.\(i / 256).\(i % 256)") }
        #expect(counts.byAddress.isEmpty)
        #expect(counts.total == 0)
        counts.release(address: "never-seen")
        #expect(counts.total == 0)
    }
}

@Suite("Bounded answers")
struct BoundedAnswerTests {
    @Test("a poll answer stops taking publications at its byte limit, and takes nothing after the first one dropped")
    func pollBudget() {
        var answer = ""
        let collector = CollectOutput(purpose: .poll, maximumBytes: 100) { answer = String(buffer: $0) }
        #expect(collector.append(ByteBuffer(string: String(repeating: "a", count: 60))))
        #expect(!collector.append(ByteBuffer(string: String(repeating: "b", count: 60))))
        #expect(!collector.append(ByteBuffer(string: "c")))
        collector.appendPosition(ByteBuffer(string: "{}"))
        collector.complete()
        #expect(answer == "[" + String(repeating: "a", count: 60) + ",{}]")
    }

    @Test("an rpc reply that does not fit what is left is refused its room")
    func rpcBudget() {
        let collector = CollectOutput(purpose: .rpc, maximumBytes: 100) { _ in }
        #expect(collector.reserve(60))
        #expect(!collector.reserve(60))
        #expect(collector.reserve(30))
    }

    @Test("history over the WebSocket answers 106 when the answer would pass the outbound limit")
    func historyOverLimit() throws {
        var configuration = ServerConfiguration()
        configuration.outboundLimit = 4096
        let node = try EmbeddedNode(configuration: configuration)
        let session = try node.session()
        try session.send(#"{"id":1,"connect":{}}"#)
        let data = String(repeating: "x", count: 500)
        for i in 0..<10 { try session.send(#"{"id":\#(i + 2),"publish":{"channel":"big","data":"\#(data)"}}"#) }
        _ = try session.messages()
        try session.send(#"{"id":50,"history":{"channel":"big"}}"#)
        let reply = try #require(try session.messages().first { $0["id"] == .integer(50) })
        #expect(reply["error"]?["code"] == .integer(106))
        try session.send(#"{"id":51,"history":{"channel":"big","limit":2}}"#)
        let small = try #require(try session.messages().first { $0["id"] == .integer(51) })
        #expect(small["result"]?["publications"]?.arrayValue?.count == 2)
    }

    @Test("history limits above the maximum are clamped to it")
    func historyClamp() {
        let params = HistoryParams(channel: "a", limit: Int.max)
        #expect(HistoryQuery(params, maximumLimit: 1000).limit == 1000)
        #expect(HistoryQuery(HistoryParams(channel: "a", limit: -1), maximumLimit: 1000).limit == 1000)
        #expect(HistoryQuery(HistoryParams(channel: "a"), maximumLimit: 1000).limit == 1000)
        #expect(HistoryQuery(HistoryParams(channel: "a", limit: 0), maximumLimit: 1000).limit == 0)
        #expect(HistoryQuery(HistoryParams(channel: "a", limit: 7), maximumLimit: 1000).limit == 7)
    }

    @Test("a token deadline from any exp is clamped, never trapping")
    func tokenDeadline() {
        let now = 1_000.0
        for exp in [9.3e15, 1e300, Double(Int64.max), -1e300, 0] {
            _ = ClientSession.deadline(expiresAt: exp, now: now)
        }
        #expect(ClientSession.deadline(expiresAt: 1e300, now: now) > .now() + .seconds(86_400 * 365))
    }
}

@Suite("Close reasons")
struct CloseReasonTests {
    @Test("a long reason is cut between characters and the frame stays within 125 bytes of payload", arguments: [
        String(repeating: "é", count: 100), String(repeating: "a", count: 122) + "€€", String(repeating: "😀", count: 40), "short",
    ])
    func cut(_ reason: String) {
        let cut = WebSocketFrameBuilder.closeReason(reason)
        #expect(cut.utf8.count <= 123)
        #expect(reason.hasPrefix(cut))
        let frame = WebSocketFrameBuilder.closeFrame(code: 3501, reason: reason, allocator: ByteBufferAllocator())
        let payload = frame.getSlice(at: frame.readerIndex + 2, length: frame.readableBytes - 2)!
        #expect(frame.getInteger(at: frame.readerIndex + 1, as: UInt8.self) == UInt8(payload.readableBytes), "a one-byte length")
        #expect(payload.readableBytes <= 125)
        #expect(UTF8Validation.isValid(Array(payload.readableBytesView.dropFirst(2))))
    }
}

@Suite("Trusted proxies")
struct TrustedProxyTests {
    @Test("a trusted proxy's address is not held to the per-address cap, only to the node's")
    func proxyNotCapped() {
        var counts = ConnectionCounts(maximum: 5, maximumPerAddress: 2)
        for _ in 0..<5 { #expect(counts.admit(address: "10.0.0.1", capped: false) == .admitted) }
        #expect(counts.admit(address: "10.0.0.1", capped: false) == .nodeFull)
    }

    @Test("trustedProxies loads from a comma-separated variable and from a list")
    func configuration() throws {
        var configuration = ServerConfiguration()
        try configuration.apply(environment: ["SWITCHBOARD_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.2"])
        #expect(configuration.trustedProxies == ["127.0.0.1", "10.0.0.2"])
        try configuration.apply(file: JSONObject([("trustedProxies", .array([.string("::1")]))]))
        #expect(configuration.trustedProxies == ["::1"])
        #expect(throws: (any Error).self) { try configuration.apply(file: JSONObject([("trustedProxies", .string("x"))])) }
    }
}

@Suite("Echo endpoint")
struct EchoHandlerTests {
    @Test("an echo connection that sends nothing for its idle timeout is closed (1001); each message moves the deadline")
    func idleEchoIsClosed() throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let closes = CloseRequestRecorder()
        try channel.pipeline.syncOperations.addHandler(closes)
        try channel.pipeline.syncOperations.addHandler(EchoHandler(idleTimeout: .seconds(30)))
        loop.advanceTime(by: .seconds(20))
        try channel.writeInbound(WebSocketMessage.text(ByteBuffer(string: "hi")))
        #expect(try channel.readOutbound(as: ByteBuffer.self) != nil, "echoed")
        loop.advanceTime(by: .seconds(25))  // 45 s in, 25 s after the message
        #expect(closes.codes.isEmpty)
        loop.advanceTime(by: .seconds(6))  // 51 s in, 31 s after it
        #expect(closes.codes == [1001])
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }
}

/// Records the close requests a handler sends towards the frame handler.
final class CloseRequestRecorder: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var codes: [UInt16] = []

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if let request = event as? WebSocketCloseRequest { self.codes.append(request.code) }
        promise?.succeed()
    }
}
