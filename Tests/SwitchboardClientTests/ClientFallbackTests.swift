import Foundation
import NIOCore
import SwitchboardCore
import SwitchboardServer
import Testing

@testable import SwitchboardClient

/// The Swift client over SSE, and its fallback from WebSocket, against a real node in this process
/// over loopback sockets (with a proxy that forbids WebSocket upgrades where a test needs one).
@Suite("Swift client over SSE and its fallback", .serialized, .timeLimit(.minutes(3)))
struct ClientFallbackTests {
    typealias Loopback = ClientLoopbackTests

    @Test("SSE only: subscribe, publish (command POSTs), history and presence, every publication once and in order")
    func sseOnly() async throws {
        try await TestNode.with { port in
            let reader = try Loopback.client(port: port) { $0.transports = [.sse] }
            let writer = try Loopback.client(port: port)
            reader.connect()
            writer.connect()
            let result = try await reader.connected()
            #expect(result.transport == .sse)
            #expect(!result.pong, "SSE cannot answer pings")
            #expect(try await writer.connected().transport == .webSocket)
            let subscription = try await reader.subscribe("feed")
            #expect(try await reader.presenceStats("feed").clients == 1)
            for i in 1...30 {
                if i.isMultiple(of: 2) {
                    try await writer.publish("feed", json: #"{"n":\#(i)}"#)
                } else {
                    try await reader.publish("feed", json: #"{"n":\#(i)}"#)  // a POST to /sse?session=
                }
            }
            let events = await Loopback.collect(subscription, publications: 30)
            #expect(Loopback.offsets(events) == Array(1...30))
            let numbers = events.compactMap { if case .publication(let p) = $0 { p.json } else { nil } }
            #expect(numbers == (1...30).map { #"{"n":\#($0)}"# })
            let history = try await reader.history("feed", limit: 5, reverse: true)
            #expect(history.publications.map(\.offset) == [30, 29, 28, 27, 26])
            // Many requests at once: batched into POSTs, answered in order.
            let positions = try await withThrowingTaskGroup(of: UInt64?.self) { group in
                for i in 0..<50 { group.addTask { try await reader.publish("burst", json: "\(i)")?.offset } }
                var offsets: [UInt64] = []
                for try await offset in group { if let offset { offsets.append(offset) } }
                return offsets.sorted()
            }
            #expect(positions == Array(1...50))
            await reader.close()
            await writer.close()
            let deadline = ContinuousClock.now + .seconds(5)
            while OpenSockets.count(port: port) > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(OpenSockets.count(port: port) == 0, "the stream and every command POST closed")
        }
    }

    @Test("the node ends the stream (3001): the client comes back over SSE and recovers what it missed, once, in order; 3502 closes it")
    func sseRecoveryAndTerminalCode() async throws {
        try await TestNode.with { port in
            let reader = try Loopback.client(port: port) { $0.transports = [.sse] }
            let writer = try Loopback.client(port: port)
            reader.connect()
            writer.connect()
            let readerID = try await reader.connected().client
            try await writer.connected()
            let subscription = try await reader.subscribe("feed")
            _ = try await reader.presence("feed")
            for i in 1...5 { try await writer.publish("feed", json: "\(i)") }
            let (status, body) = try await APIRequest.post(
                port: port, method: "disconnect", body: #"{"client":"\#(readerID)","code":3001,"reason":"test"}"#)
            #expect(status == 200, "\(body)")
            for i in 6...20 { try await writer.publish("feed", json: "\(i)") }
            let events = await Loopback.collect(subscription, publications: 20)
            #expect(Loopback.offsets(events) == Array(1...20))
            let again = try await reader.connected()
            #expect(again.client != readerID && again.transport == .sse)
            // A code that forbids reconnecting: SSE has no close frame, the disconnect event carries it.
            let (stopped, _) = try await APIRequest.post(port: port, method: "disconnect", body: #"{"client":"\#(again.client)","code":3502}"#)
            #expect(stopped == 200)
            let rest = await Loopback.collect(subscription, publications: .max)  // to its end, or 10 s
            #expect(rest.last == .ended(code: 3502, reason: "forced"))
            #expect(await reader.state == .closed(code: 3502, reason: "forced"))
            await writer.close()
        }
    }

    @Test("behind a proxy that forbids WebSocket the client falls back to SSE at once, then climbs back when WebSocket passes again, losing and doubling nothing")
    func fallbackAndClimbBack() async throws {
        let (node, port) = try await TestNode.start()
        let proxy = try await UpgradeBlockingProxy(nodePort: port)
        do {
            let reader = try Loopback.client(port: proxy.port) {
                $0.upgradeInterval = .milliseconds(400)
                $0.minimumReconnectDelay = .seconds(5)  // the fallback must not wait for the backoff
                $0.maximumReconnectDelay = .seconds(5)
            }
            let writer = try Loopback.client(port: port)
            reader.connect()
            writer.connect()
            let started = ContinuousClock.now
            let first = try await reader.connected()
            #expect(first.transport == .sse)
            #expect(ContinuousClock.now - started < .seconds(3), "moved to SSE without the 5 s backoff")
            #expect(proxy.refused == 1)
            try await writer.connected()
            let subscription = try await reader.subscribe("feed")
            _ = try await reader.presence("feed")
            for i in 1...10 { try await writer.publish("feed", json: "\(i)") }
            // Probes keep being refused while the proxy blocks: the client stays on SSE.
            try await Task.sleep(for: .milliseconds(1_200))
            #expect(proxy.refused >= 2)
            #expect(try await reader.connected().client == first.client)
            proxy.blocking = false
            let publishing = Task {
                for i in 11...60 {
                    try await writer.publish("feed", json: "\(i)")
                    try await Task.sleep(for: .milliseconds(40))
                }
            }
            let states = try await reader.watchStates(limit: .seconds(15)) { state in
                if case .connected(let result) = state { return result.transport == .webSocket }
                return false
            }
            let climbed = states.last.flatMap { if case .connected(let result) = $0 { result } else { nil } }
            #expect(climbed?.transport == .webSocket, "\(states)")
            try await publishing.value
            let events = await Loopback.collect(subscription, publications: 60)
            #expect(Loopback.offsets(events) == Array(1...60))
            await reader.close()
            await writer.close()
        } catch {
            await proxy.stop()
            await node.stop()
            throw error
        }
        await proxy.stop()
        await node.stop()
    }

    @Test("a stream refused with an error status is a failed attempt with the status in its reason, and the client keeps trying")
    func refusedStream() async throws {
        try await TestNode.with { port in
            let client = try Loopback.client(port: port) {
                // `/nowhere` answers 404: a stream path that does not exist.
                $0.endpoint.ssePath = "/nowhere"
                $0.transports = [.sse]
                $0.minimumReconnectDelay = .seconds(2)
                $0.maximumReconnectDelay = .seconds(2)
            }
            try await Self.expectRefusal(client)
        }
    }

    static func expectRefusal(_ client: SwitchboardClient) async throws {
        client.connect()
        let states = try await client.watchStates(limit: .seconds(10)) { state in
            if case .disconnected(_, let reason) = state { return reason.contains("HTTP 404") }
            return false
        }
        let reasons = states.compactMap { if case .disconnected(_, let reason) = $0 { reason } else { nil } }
        #expect(reasons.contains { $0.hasPrefix("stream refused: HTTP 404") }, "\(states)")
        await client.close()
    }
}
