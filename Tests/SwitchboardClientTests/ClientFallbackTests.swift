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

    /// Runs `body` with a node and a proxy in front of it that forbids `blockedPaths`; stops both.
    static func withProxiedNode(blockedPaths: Set<String>, _ body: (_ nodePort: Int, UpgradeBlockingProxy) async throws -> Void) async throws {
        let (node, port) = try await TestNode.start()
        let proxy = try await UpgradeBlockingProxy(nodePort: port, blockedPaths: blockedPaths)
        do {
            try await body(port, proxy)
        } catch {
            await proxy.stop()
            await node.stop()
            throw error
        }
        await proxy.stop()
        await node.stop()
    }

    /// Lets the proxy pass everything, publishes `range` (one every 40 ms) and checks that `reader` climbs
    /// back to WebSocket meanwhile and that `subscription` gets offsets 1 to the end of `range`, once, in order.
    static func expectClimbBack(
        reader: SwitchboardClient, writer: SwitchboardClient, proxy: UpgradeBlockingProxy, subscription: ClientSubscription,
        publishing range: ClosedRange<Int>
    ) async throws {
        proxy.blocking = false
        let publishing = Task {
            for i in range {
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
        let events = await Loopback.collect(subscription, publications: range.upperBound)
        #expect(Loopback.offsets(events) == Array(1...UInt64(range.upperBound)))
        await reader.close()
        await writer.close()
    }

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
        try await Self.withProxiedNode(blockedPaths: ["/ws"]) { port, proxy in
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
            // Exactly one WebSocket attempt before SSE (the count alone could already hold the first
            // climb-back probe, 300-500 ms later, when this task runs late).
            #expect(proxy.requestsUntilFirstPassed == ["/ws refused", "/sse passed"])
            try await writer.connected()
            let subscription = try await reader.subscribe("feed")
            _ = try await reader.presence("feed")
            for i in 1...10 { try await writer.publish("feed", json: "\(i)") }
            // Probes keep being refused while the proxy blocks: the client stays on SSE.
            let probed = ContinuousClock.now + .seconds(10)
            while proxy.refused < 2, ContinuousClock.now < probed { try await Task.sleep(for: .milliseconds(50)) }
            #expect(proxy.refused >= 2)
            #expect(try await reader.connected().client == first.client)
            try await Self.expectClimbBack(reader: reader, writer: writer, proxy: proxy, subscription: subscription, publishing: 11...60)
        }
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

    // MARK: long-polling

    @Test("long-polling only: subscribe, publish (rpc), history, every publication once and in order, across many polls")
    func longPollingOnly() async throws {
        try await TestNode.with { port in
            let reader = try Loopback.client(port: port) {
                $0.transports = [.longPolling]
                $0.pollTimeout = .seconds(2)
            }
            let writer = try Loopback.client(port: port)
            reader.connect()
            writer.connect()
            let result = try await reader.connected()
            #expect(result.transport == .longPolling)
            try await writer.connected()
            let subscription = try await reader.subscribe("feed")
            // The first event: subscribed, from the channel's position (none published yet).
            let first = await Loopback.collect(subscription, publications: 0)
            guard case .subscribed(let position, let recovered) = first.first else {
                Issue.record("first event: \(first)")
                return
            }
            #expect(position?.offset == 0 && recovered == nil, "a first subscribe: the channel's position, nothing to recover")
            // Between polls the poller is in presence, under an id of its own.
            let present = try await writer.presence("feed")
            #expect(present.count == 1 && present.keys.allSatisfy { $0.hasPrefix("lp-") }, "\(present)")
            for i in 1...20 {
                if i.isMultiple(of: 2) {
                    try await writer.publish("feed", json: #"{"n":\#(i)}"#)
                } else {
                    #expect(try await reader.publish("feed", json: #"{"n":\#(i)}"#)?.offset == UInt64(i))  // over /rpc
                }
                if i.isMultiple(of: 5) { try await Task.sleep(for: .milliseconds(50)) }  // some land between polls
            }
            let events = await Loopback.collect(subscription, publications: 20)
            #expect(Loopback.offsets(events) == Array(1...20), "\(events)")
            #expect(events.compactMap { if case .publication(let p) = $0 { p.json } else { nil } } == (1...20).map { #"{"n":\#($0)}"# })
            let history = try await reader.history("feed", limit: 3, reverse: true)
            #expect(history.publications.map(\.offset) == [20, 19, 18])
            // A channel subscribed while a poll waits: the poll starts over with it.
            let second = try await reader.subscribe("second")
            _ = await Loopback.collect(second, publications: 0)
            try await writer.publish("second", json: "1")
            #expect(Loopback.offsets(await Loopback.collect(second, publications: 1)) == [1])
            await reader.close()
            await writer.close()
            let deadline = ContinuousClock.now + .seconds(5)
            while OpenSockets.count(port: port) > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(OpenSockets.count(port: port) == 0, "no poll or rpc request left open")
        }
    }

    @Test("long-polling with a bad token: 401 closes the client with 3500; a valid one connects")
    func longPollingBadToken() async throws {
        try await TestNode.with(ClientAcrossNodesTests.expiringTokens) { port in
            try await Self.expectTokenRules(port: port)
        }
    }

    static func expectTokenRules(port: Int) async throws {
        let client = try Loopback.client(port: port) {
            $0.transports = [.longPolling]
            $0.token = "not-a-token"
        }
        client.connect()
        let states = try await client.watchStates(limit: .seconds(10)) { state in
            if case .closed = state { true } else { false }
        }
        #expect(states.last.map { if case .closed(let code, _) = $0 { code == 3500 } else { false } } == true, "\(states)")
        let valid = try Loopback.client(port: port) {
            $0.transports = [.longPolling]
            $0.token = ClientAcrossNodesTests.token(user: "lp", expiresIn: 3600)
        }
        valid.connect()
        let result = try await valid.connected()
        #expect(result.transport == .longPolling)
        try await valid.ping()  // over /rpc, with the token
        await valid.close()
    }

    @Test("behind a proxy that forbids WebSocket and SSE the client falls to long-polling at once, and climbs back to WebSocket when it passes, losing and doubling nothing")
    func fallbackToLongPolling() async throws {
        try await Self.withProxiedNode(blockedPaths: ["/ws", "/sse"]) { port, proxy in
            let reader = try Loopback.client(port: proxy.port) {
                $0.upgradeInterval = .milliseconds(500)
                $0.pollTimeout = .seconds(1)
                $0.minimumReconnectDelay = .seconds(5)
                $0.maximumReconnectDelay = .seconds(5)
            }
            let writer = try Loopback.client(port: port)
            reader.connect()
            writer.connect()
            let started = ContinuousClock.now
            #expect(try await reader.connected().transport == .longPolling)
            #expect(ContinuousClock.now - started < .seconds(3), "two fallbacks without the 5 s backoff")
            #expect(proxy.requestsUntilFirstPassed == ["/ws refused", "/sse refused", "/rpc passed"], "one WebSocket upgrade and one SSE stream refused, then the long-poll connect")
            try await writer.connected()
            let subscription = try await reader.subscribe("feed")
            _ = await Loopback.collect(subscription, publications: 0)
            for i in 1...10 { try await writer.publish("feed", json: "\(i)") }
            try await Self.expectClimbBack(reader: reader, writer: writer, proxy: proxy, subscription: subscription, publishing: 11...40)
        }
    }

    @Test("a climb-back probe that a proxy takes and never answers is cut at the connect timeout, and probing goes on")
    func stalledProbe() async throws {
        try await Self.withProxiedNode(blockedPaths: ["/ws"]) { port, proxy in
            proxy.stalls = true
            let client = try Loopback.client(port: proxy.port) {
                $0.transports = [.webSocket, .sse]  // the first WebSocket attempt stalls too, then SSE
                $0.upgradeInterval = .milliseconds(100)
                $0.connectTimeout = .milliseconds(300)
            }
            client.connect()
            let first = try await client.connected()
            #expect(first.transport == .sse)
            // Without a deadline the first probe would hang forever and no other would follow.
            let deadline = ContinuousClock.now + .seconds(10)
            while proxy.refused < 4, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(proxy.refused >= 4, "the stalled attempt and probes after stalled ones: \(proxy.refused)")
            #expect(try await client.connected().client == first.client, "the SSE connection stays")
            await client.close()
        }
    }
}
