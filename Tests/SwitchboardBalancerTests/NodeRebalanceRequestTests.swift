import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import SwitchboardBalancer

/// `POST /admin/rebalance` reaching the nodes: the key file, the request each node gets and how its
/// answer is read (`HTTPStatusLineHandler`), on an embedded channel.
@Suite struct NodeRebalanceRequestTests {
    static func keyFile(_ content: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sb-node-key-\(UUID().uuidString)").path
        try Data(content.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("the key file is read without its trailing newline, never shown, and re-read by each set")
    func keyFileIsRead() throws {
        let path = try Self.keyFile("s3cret-key\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        var configuration = BalancerConfiguration()
        try configuration.set("nodeApiKeyFile", text: path)
        #expect(configuration.nodeAPIKey?.value == "s3cret-key")
        #expect(!"\(configuration)".contains("s3cret-key"))
        #expect("\(configuration.nodeAPIKey!)" == "(redacted)")
        // Rotated: the next read (a SIGHUP runs every set again) takes the new key.
        try Data("new-key".utf8).write(to: URL(fileURLWithPath: path))
        try configuration.set("nodeApiKeyFile", text: path)
        #expect(configuration.nodeAPIKey?.value == "new-key")
        try configuration.set("nodeApiKeyFile", text: "")
        #expect(configuration.nodeAPIKey == nil)
    }

    @Test("an empty, missing or header-breaking key file is refused, and the error never holds the key", arguments: [
        "", "\n", "two words", "line\r\nX-Injected: 1", "tab\tkey", "ключ",
    ])
    func badKeyFilesAreRefused(_ content: String) throws {
        let path = try Self.keyFile(content)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var configuration = BalancerConfiguration()
        let error = #expect(throws: BalancerConfigurationError.self) { try configuration.set("nodeApiKeyFile", text: path) }
        #expect(error?.description.contains(path) == true)
        if content.count > 2 { #expect(error?.description.contains(content) == false) }
        #expect(throws: BalancerConfigurationError.self) { try configuration.set("nodeApiKeyFile", text: path + ".missing") }
    }

    @Test("each node gets POST /api/rebalance with the key, an empty body and Connection: close")
    func requestCarriesTheKey() throws {
        let node = try BackendNode.parse("127.0.0.1:8001")
        let request = NodeRebalanceRequest.request(to: node, key: NodeAPIKey("k-123"))
        let text = String(buffer: request)
        #expect(text.hasPrefix("POST /api/rebalance HTTP/1.1\r\nHost: 127.0.0.1:8001\r\n"))
        #expect(text.contains("\r\nAuthorization: apikey k-123\r\n"))
        #expect(text.contains("\r\nContent-Length: 0\r\n"))
        #expect(text.hasSuffix("\r\nConnection: close\r\n\r\n"))
    }

    /// Runs `HTTPStatusLineHandler` on an embedded channel: what it wrote, and the outcome after `replies` (then a close when asked).
    static func exchange(_ replies: [String], closeAfter: Bool = false) throws -> (written: String, outcome: HTTPStatusLineHandler.Outcome?) {
        let channel = EmbeddedChannel()
        let promise = channel.eventLoop.makePromise(of: HTTPStatusLineHandler.Outcome.self)
        final class Box: @unchecked Sendable { var value: HTTPStatusLineHandler.Outcome? }
        let outcome = Box()
        promise.futureResult.whenSuccess { outcome.value = $0 }
        try channel.pipeline.syncOperations.addHandler(
            HTTPStatusLineHandler(request: ByteBuffer(string: "REQUEST"), promise: promise))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let written = try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } ?? ""
        for reply in replies where channel.isActive {
            try channel.writeInbound(ByteBuffer(string: reply))
        }
        if closeAfter, channel.isActive { channel.pipeline.fireChannelInactive() }
        _ = try? channel.finish()
        return (written, outcome.value)
    }

    @Test("the node's status is read from its first line, in pieces too")
    func statusIsRead() throws {
        #expect(try Self.exchange(["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]) == ("REQUEST", .status(200)))
        #expect(try Self.exchange(["HTTP/1.1 4", "01 Unauthorized\r", "\n"]).outcome == .status(401))
        #expect(try Self.exchange(["HTTP/1.0 404 Not Found\n"]).outcome == .status(404))
    }

    @Test("anything but a status line is a failure: garbage, a bad code, 1 KB without a line end, a close before the answer")
    func failures() throws {
        for replies in [["SSH-2.0-OpenSSH\r\n"], ["HTTP/1.1 2000 OK\r\n"], ["HTTP/1.1 abc\r\n"], [String(repeating: "x", count: 1100)]] {
            guard case .failed = try Self.exchange(replies).outcome else {
                Issue.record("\(replies.map { $0.prefix(20) }) was not a failure")
                continue
            }
        }
        guard case .failed(let reason) = try Self.exchange(["HTTP/1.1 20"], closeAfter: true).outcome else {
            Issue.record("a close before the line end was not a failure")
            return
        }
        #expect(reason == "closed before answering")
    }

    @Test("requests that come while the nodes are being asked share that round: one connection per node, not one per request")
    func concurrentRebalancesShareOneRound() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let accepted = NIOLockedValueBox(0)
        // A node that takes the connection and never answers, so the round lasts its whole deadline.
        let silentNode = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = silentNode.localAddress!.port!
        let nodes = [(node: try BackendNode.parse("127.0.0.1:\(port)"), address: try SocketAddress(ipAddress: "127.0.0.1", port: port))]
        let round = NodeRebalanceRound()
        let loop = group.next()
        let asks = (0..<5).map { _ in round.ask(nodes, key: NodeAPIKey("k"), timeout: .seconds(2), on: loop) }
        for ask in asks {
            let answers = try await ask.get()
            #expect(answers.map(\.node) == ["127.0.0.1:\(port)"])
            #expect(answers.first?.outcome == .failed("no answer within the deadline"))
        }
        #expect(accepted.withLockedValue { $0 } == 1)
        // The round is over: the next request asks again.
        _ = try await round.ask(nodes, key: NodeAPIKey("k"), timeout: .seconds(2), on: loop).get()
        #expect(accepted.withLockedValue { $0 } == 2)
        try await silentNode.close()
        try await group.shutdownGracefully()
    }
}
