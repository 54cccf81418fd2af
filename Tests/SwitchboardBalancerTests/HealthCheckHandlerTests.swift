import NIOCore
import NIOEmbedded
import Testing

@testable import SwitchboardBalancer

/// The active check's two modes, on an embedded channel.
@Suite struct HealthCheckHandlerTests {
    /// Runs the handler `makeHandler` builds on an embedded channel: whether the node is up after `replies`, and what was written.
    static func run(_ makeHandler: (EventLoopPromise<Bool>) -> any ChannelHandler, replies: [[UInt8]]) throws -> (Bool?, [ByteBuffer]) {
        let channel = EmbeddedChannel()
        let promise = channel.eventLoop.makePromise(of: Bool.self)
        final class Box: @unchecked Sendable { var value: Bool? }
        let result = Box()
        promise.futureResult.whenSuccess { result.value = $0 }
        try channel.pipeline.syncOperations.addHandler(makeHandler(promise))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var written: [ByteBuffer] = []
        for reply in replies {
            try channel.writeInbound(ByteBuffer(bytes: reply))
            while let out = try channel.readOutbound(as: ByteBuffer.self) { written.append(out) }
        }
        while let out = try channel.readOutbound(as: ByteBuffer.self) { written.append(out) }
        _ = try? channel.finish()
        return (result.value, written)
    }

    static func webSocket(_ replies: [[UInt8]]) throws -> (Bool?, [ByteBuffer]) {
        try Self.run({ WebSocketHealthCheckHandler(path: "/ws", host: "n", promise: $0) }, replies: replies)
    }

    /// The HTTP check as `HealthChecker` sets it up: `HTTPStatusLineHandler`, its outcome mapped to up or down.
    static func http(_ replies: [[UInt8]]) throws -> (Bool?, [ByteBuffer]) {
        try Self.run(
            { promise in
                let handler = HealthChecker.handler(.http, path: "/readyz", host: "n", promise: promise)
                #expect(handler is HTTPStatusLineHandler)
                return handler
            }, replies: replies)
    }

    static let upgraded = Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".utf8)

    @Test func webSocketCheckNeedsTheUpgradeAndThePong() throws {
        let (ok, written) = try Self.webSocket([Self.upgraded, [0x8A, 0x04] + Array("sbhc".utf8)])
        #expect(ok == true)
        let request = String(buffer: written[0])
        #expect(request.hasPrefix("GET /ws HTTP/1.1\r\n") && request.contains("Upgrade: websocket\r\n"))
        #expect(Array(written[1].readableBytesView) == WebSocketHealthCheckHandler.pingFrame)
        #expect(WebSocketHealthCheckHandler.pingFrame[0] == 0x89 && WebSocketHealthCheckHandler.pingFrame[1] & 0x80 != 0)  // masked ping
    }

    @Test func webSocketCheckFailsOnRefusalOrAnotherFrame() throws {
        #expect(try Self.webSocket([Array("HTTP/1.1 503 Service Unavailable\r\n\r\n".utf8)]).0 == false)
        // The head and a close frame in one read.
        #expect(try Self.webSocket([Self.upgraded + [0x88, 0x02, 0x0B, 0xB9]]).0 == false)
        // EOF before the pong.
        #expect(try Self.webSocket([Self.upgraded]).0 == false)
    }

    @Test func httpCheckRequest() {
        #expect(
            String(buffer: HealthChecker.httpRequest(path: "/readyz", host: "127.0.0.1:8001"))
                == "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:8001\r\nUser-Agent: switchboard-balancer\r\nConnection: close\r\n\r\n")
    }

    @Test func httpCheckNeedsA200() throws {
        let (ok, written) = try Self.http([Array("HTTP/1.1 200 OK\r\n".utf8)])
        #expect(ok == true)
        #expect(written == [HealthChecker.httpRequest(path: "/readyz", host: "n")])
        #expect(try Self.http([Array("HTTP/1.1 503 Service Unavailable\r\n".utf8)]).0 == false)
        #expect(try Self.http([Array("HTTP/1.1 204 No Content\r\n".utf8)]).0 == false)
        // No reason phrase (lenient servers send it so), with CRLF or a bare LF.
        #expect(try Self.http([Array("HTTP/1.1 200\r\n".utf8)]).0 == true)
        #expect(try Self.http([Array("HTTP/1.0 200\n".utf8)]).0 == true)
        #expect(try Self.http([Array("HTTP/1.1 2000\r\n".utf8)]).0 == false)
        // Not HTTP, and EOF before the status line.
        #expect(try Self.http([Array("SSH-2.0-OpenSSH\r\n".utf8)]).0 == false)
        #expect(try Self.http([Array("HTTP/1.1 20".utf8)]).0 == false)
    }
}

/// The imbalance ratio in `/metrics`.
@Suite struct ImbalanceRatioTests {
    @Test func spreadIsBusiestOverEmptiestPerWeight() {
        #expect(NodePicker.spread(of: []) == 1)
        #expect(NodePicker.spread(of: [PickCandidate(id: "a", weight: 1, active: 9)]) == 1)
        let even = [PickCandidate(id: "a", weight: 1, active: 9), PickCandidate(id: "b", weight: 3, active: 27)]
        #expect(NodePicker.spread(of: even) == 1)
        let skewed = [PickCandidate(id: "a", weight: 1, active: 19), PickCandidate(id: "b", weight: 1, active: 0)]
        #expect(NodePicker.spread(of: skewed) == 20)
    }
}
