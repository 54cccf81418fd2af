import Crypto
import NIOCore
import NIOEmbedded
import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
@_spi(Harness) @testable import SwitchboardServer
@_spi(Harness) import SwitchboardServerTesting
import Testing

/// A memory broker whose per-user acquires wait until the test answers them, and which records
/// every release.
final class HeldUserSlotBroker: ForwardingBroker, @unchecked Sendable {
    var acquires: [(user: String, connection: String, promise: EventLoopPromise<Bool>)] = []
    /// Users whose connection was released, in order.
    var releases: [String] = []
    /// Connections released, in order.
    var releasedConnections: [String] = []
    /// Releases to fail before they succeed again.
    var failingReleases = 0

    override func acquireUserConnection(user: String, connection: String, node: String, limit: Int) -> EventLoopFuture<Bool> {
        let promise = self.eventLoop.makePromise(of: Bool.self)
        self.acquires.append((user, connection, promise))
        return promise.futureResult
    }

    override func releaseUserConnection(user: String, connection: String) -> EventLoopFuture<Void> {
        if self.failingReleases > 0 {
            self.failingReleases -= 1
            return self.eventLoop.makeFailedFuture(BrokerError(.invalidRequest, "down"))
        }
        self.releases.append(user)
        self.releasedConnections.append(connection)
        return self.eventLoop.makeSucceededVoidFuture()
    }

    /// Answers the oldest acquire still waiting.
    func answer(_ result: Result<Bool, any Error>) {
        let (_, _, promise) = self.acquires.removeFirst()
        promise.completeWith(result)
    }
}

@Suite("connectionsPerUser in the session: waiting for the broker, releasing once")
struct UserSlotSessionTests {
    static let secret = "user-slot-session-test-secret-0123456789abcdef"

    static func token(_ sub: String) -> String {
        let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = Base64URL.encode(Array(#"{"sub":"\#(sub)"}"#.utf8))
        let input = header + "." + payload
        let mac = HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: SymmetricKey(data: Array(Self.secret.utf8)))
        return input + "." + Base64URL.encode(Array(mac))
    }

    static func node(cap: Int = 1) throws -> EmbeddedNode<HeldUserSlotBroker> {
        var configuration = ServerConfiguration()
        configuration.tokenSecret = Self.secret
        configuration.limits.connectionsPerUser = cap
        return try EmbeddedNode(configuration: configuration, makeBroker: { HeldUserSlotBroker(eventLoop: $0) })
    }

    static func connect(_ session: TestSession, _ sub: String, id: Int = 1) throws {
        try session.send(#"{"id":\#(id),"connect":{"token":"\#(Self.token(sub))"}}"#)
    }

    @Test("the connect reply and commands sent behind it wait for the broker; then they run in order; the close releases once")
    func admitted() throws {
        let node = try Self.node()
        let session = try node.session()
        try Self.connect(session, "alice")
        try session.send(#"{"id":2,"ping":{}}"#)
        #expect(try session.frames().isEmpty, "answered before the broker did")
        #expect(node.broker.acquires.map(\.user) == ["alice"])
        node.broker.answer(.success(true))
        let messages = try session.messages()
        #expect(messages.compactMap { $0["id"]?.intValue } == [1, 2])
        #expect(messages.first?["result"]?["user"]?.stringValue == "alice")
        let client = try #require(messages.first?["result"]?["client"]?.stringValue)
        try session.channel.close().wait()
        node.loop.run()
        #expect(node.broker.releasedConnections == [client], "released another connection than the one counted")
        _ = try? session.channel.finish()
        node.shutdown()
    }

    @Test("refused by the broker: close 3504, counted, this node's count given back, nothing released in the broker")
    func refused() throws {
        let node = try Self.node()
        let session = try node.session()
        try Self.connect(session, "alice")
        node.broker.answer(.success(false))
        let frames = try session.frames()
        #expect(frames.last?.closeCode == 3504)
        #expect(!frames.contains { $0.opcode == 0x1 }, "a refused connect got a reply")
        // This node's count was given back: the next connect of alice reaches the broker again.
        let next = try node.session()
        try Self.connect(next, "alice")
        #expect(node.broker.acquires.count == 1)
        #expect(node.broker.releases.isEmpty)
        node.broker.answer(.success(true))
        #expect(try next.messages().first?["result"]?["user"]?.stringValue == "alice")
        _ = try? next.channel.finish()
        _ = try? session.channel.finish()
        node.shutdown()
    }

    @Test("closed while the broker is asked: this node's count at once, the broker's slot once the answer comes")
    func closedWhileAcquiring() throws {
        let node = try Self.node()
        let session = try node.session()
        try Self.connect(session, "alice")
        try session.channel.close().wait()
        node.loop.run()
        #expect(node.broker.releases.isEmpty, "released before the broker counted anything")
        // This node's count is free already: a second connection of alice gets to the broker.
        let second = try node.session()
        try Self.connect(second, "alice")
        #expect(node.broker.acquires.count == 2)
        node.broker.answer(.success(true))
        node.loop.run()
        #expect(node.broker.releases == ["alice"], "the abandoned slot was not given back exactly once")
        node.broker.answer(.success(true))
        #expect(try second.messages().first?["result"]?["user"]?.stringValue == "alice")
        try second.channel.close().wait()
        node.loop.run()
        #expect(node.broker.releases == ["alice", "alice"])
        node.shutdown()
    }

    @Test("broker unavailable: admitted on this node's count (fail-open); this node's cap still holds; one idempotent release in case it was counted unseen")
    func unavailable() throws {
        let node = try Self.node()
        let session = try node.session()
        try Self.connect(session, "alice")
        node.broker.answer(.failure(BrokerError(.invalidRequest, "down")))
        #expect(try session.messages().first?["result"]?["user"]?.stringValue == "alice")
        #expect(node.broker.releases == ["alice"], "no release for an acquire that may have counted unseen")
        let over = try node.session()
        try Self.connect(over, "alice")
        #expect(node.broker.acquires.isEmpty, "over this node's cap, the broker was asked")
        #expect(try over.frames().last?.closeCode == 3504)
        try session.channel.close().wait()
        node.loop.run()
        #expect(node.broker.releases == ["alice"], "a connection not counted in the broker released there at close")
        _ = try? over.channel.finish()
        node.shutdown()
    }

    @Test("a release the broker fails is sent again with the next announce, until it goes through")
    func failedReleaseIsRetried() throws {
        let node = try Self.node()
        let session = try node.session()
        try Self.connect(session, "alice")
        let connection = node.broker.acquires[0].connection
        node.broker.answer(.success(true))
        node.broker.failingReleases = 2
        try session.channel.close().wait()
        node.loop.run()
        #expect(node.broker.releases.isEmpty)
        #expect(node.context.failedUserReleaseCount == 1)
        node.context.retryUserReleases()
        node.loop.run()
        #expect(node.broker.releases.isEmpty && node.context.failedUserReleaseCount == 1, "second failure not kept for retry")
        node.context.retryUserReleases()
        node.loop.run()
        #expect(node.broker.releasedConnections == [connection])
        #expect(node.context.failedUserReleaseCount == 0)
        node.shutdown()
    }

    @Test("more than 100 messages behind a waiting connect close the connection")
    func tooManyWaiting() throws {
        let node = try Self.node()
        let session = try node.session()
        try Self.connect(session, "alice")
        for i in 0..<PendingConnect.maximumWaiting { try session.send(#"{"id":\#(i + 2),"ping":{}}"#) }
        #expect(try session.frames().isEmpty)
        try session.send(#"{"id":1000,"ping":{}}"#)
        #expect(try session.frames().last?.closeCode == 3501)
        node.broker.answer(.success(true))
        node.loop.run()
        #expect(node.broker.releases == ["alice"])
        node.shutdown()
    }
}
