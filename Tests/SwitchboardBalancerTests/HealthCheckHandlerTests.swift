import NIOCore
import NIOEmbedded
import Testing

@testable import SwitchboardBalancer

/// The active check's two modes, on an embedded channel.
@Suite struct HealthCheckHandlerTests {
    static func run(_ mode: HealthCheckHandler.Mode, replies: [[UInt8]]) throws -> (Bool?, [ByteBuffer]) {
        let channel = EmbeddedChannel()
        let promise = channel.eventLoop.makePromise(of: Bool.self)
        final class Box: @unchecked Sendable { var value: Bool? }
        let result = Box()
        promise.futureResult.whenSuccess { result.value = $0 }
        try channel.pipeline.syncOperations.addHandler(
            HealthCheckHandler(path: mode == .http ? "/readyz" : "/ws", host: "n", mode: mode, promise: promise))
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

    static let upgraded = Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".utf8)

    @Test func webSocketCheckNeedsTheUpgradeAndThePong() throws {
        let (ok, written) = try Self.run(.webSocket, replies: [Self.upgraded, [0x8A, 0x04] + Array("sbhc".utf8)])
        #expect(ok == true)
        let request = String(buffer: written[0])
        #expect(request.hasPrefix("GET /ws HTTP/1.1\r\n") && request.contains("Upgrade: websocket\r\n"))
        #expect(Array(written[1].readableBytesView) == HealthCheckHandler.pingFrame)
        #expect(HealthCheckHandler.pingFrame[0] == 0x89 && HealthCheckHandler.pingFrame[1] & 0x80 != 0)  // masked ping
    }

    @Test func webSocketCheckFailsOnRefusalOrAnotherFrame() throws {
        #expect(try Self.run(.webSocket, replies: [Array("HTTP/1.1 503 Service Unavailable\r\n\r\n".utf8)]).0 == false)
        // The head and a close frame in one read.
        #expect(try Self.run(.webSocket, replies: [Self.upgraded + [0x88, 0x02, 0x0B, 0xB9]]).0 == false)
        // EOF before the pong.
        #expect(try Self.run(.webSocket, replies: [Self.upgraded]).0 == false)
    }

    @Test func httpCheckNeedsA200() throws {
        #expect(try Self.run(.http, replies: [Array("HTTP/1.1 200 OK\r\n".utf8)]).0 == true)
        #expect(try Self.run(.http, replies: [Array("HTTP/1.1 503 Service Unavailable\r\n".utf8)]).0 == false)
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
