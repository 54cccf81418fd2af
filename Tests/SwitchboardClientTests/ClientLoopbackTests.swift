import Foundation
import Logging
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardServer
import Testing

@testable import SwitchboardClient

/// The client against a real node in this process, over loopback sockets.
@Suite("Swift client against a node", .serialized, .timeLimit(.minutes(3)))
struct ClientLoopbackTests {
    static func client(port: Int, _ configure: (inout SwitchboardClientConfiguration) -> Void = { _ in }) throws -> SwitchboardClient {
        var configuration = try SwitchboardClientConfiguration(url: "ws://127.0.0.1:\(port)/ws")
        configuration.minimumReconnectDelay = .milliseconds(100)
        configuration.maximumReconnectDelay = .milliseconds(400)
        configuration.requestTimeout = .seconds(10)
        configure(&configuration)
        return SwitchboardClient(configuration: configuration)
    }

    /// Reads events until `count` publications came (the first event when 0), or the subscription
    /// ended, or 10 s passed.
    static func collect(_ subscription: ClientSubscription, publications count: Int) async -> [SubscriptionEvent] {
        await withTaskGroup(of: [SubscriptionEvent]?.self) { group in
            group.addTask {
                var events: [SubscriptionEvent] = []
                var publications = 0
                for await event in subscription {
                    events.append(event)
                    if case .publication = event { publications += 1 }
                    if publications >= count { break }
                }
                return events
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                return nil
            }
            let first = await group.next()!
            group.cancelAll()
            if let events = first { return events }
            return await group.next()! ?? []
        }
    }

    static func offsets(_ events: [SubscriptionEvent]) -> [UInt64] {
        events.compactMap { if case .publication(let p) = $0 { p.offset } else { nil } }
    }

    @Test("subscribe, publish from another client, receive each publication once in order with its info")
    func publishAndReceive() async throws {
        try await TestNode.with { port in
            let reader = try Self.client(port: port)
            let writer = try Self.client(port: port)
            reader.connect()
            writer.connect()
            let readerID = try await reader.connected().client
            let writerID = try await writer.connected().client
            #expect(!readerID.isEmpty && readerID != writerID)
            let subscription = try await reader.subscribe("chat:lobby")
            var positions: [StreamPosition?] = []
            // The subscribe is answered before the first publish: ask for presence, which the node
            // answers after the subscribe (replies come in order).
            _ = try await reader.presence("chat:lobby")
            for i in 1...5 {
                positions.append(try await writer.publish("chat:lobby", json: #"{"n":\#(i), "s" : "é"}"#))
            }
            let events = await Self.collect(subscription, publications: 5)
            #expect(events.first == .subscribed(position: StreamPosition(offset: 0, epoch: positions[0]!.epoch), recovered: nil))
            #expect(Self.offsets(events) == [1, 2, 3, 4, 5])
            #expect(positions.map { $0?.offset } == [1, 2, 3, 4, 5])
            let publications = events.compactMap { if case .publication(let p) = $0 { p } else { nil } }
            #expect(publications.first?.json == #"{"n":1, "s" : "é"}"#)
            #expect(publications.allSatisfy { $0.info?.client == writerID })
            struct Message: Decodable { var n: Int }
            #expect(try publications.map { try $0.decode(Message.self).n } == [1, 2, 3, 4, 5])
            await reader.close()
            await writer.close()
        }
    }

    @Test("history, presence, presence stats and ping answer as the node says")
    func requests() async throws {
        try await TestNode.with { port in
            let client = try Self.client(port: port)
            client.connect()
            let me = try await client.connected().client
            struct Note: Codable { var text: String }
            for text in ["a", "b", "c"] { try await client.publish("notes", Note(text: text)) }
            let page = try await client.history("notes", limit: 2, reverse: true)
            #expect(page.publications.map(\.offset) == [3, 2])
            #expect(page.position?.offset == 3)
            _ = try await client.subscribe("notes")
            #expect(try await client.presence("notes").keys.sorted() == [me])
            #expect(try await client.presenceStats("notes") == PresenceStats(clients: 1, users: 1))
            try await client.ping()
            await client.close()
        }
    }

    @Test("a subscription whose reader leaves more than maximumBufferedEvents unread ends (4100) and leaves the node; subscribing again from the last position read recovers the rest")
    func unreadEventsEndTheSubscription() async throws {
        try await TestNode.with { port in
            let reader = try Self.client(port: port) { $0.maximumBufferedEvents = 5 }
            let writer = try Self.client(port: port)
            reader.connect()
            writer.connect()
            let readerID = try await reader.connected().client
            _ = try await writer.connected()
            let subscription = try await reader.subscribe("unread")
            #expect(try await reader.presence("unread").keys.contains(readerID))
            for i in 1...10 { _ = try await writer.publish("unread", json: "\(i)") }
            // Nothing read yet: the node no longer has the reader on the channel.
            var present = true
            for _ in 0..<50 where present {
                present = try await writer.presence("unread").keys.contains(readerID)
                if present { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(!present)
            let events = await Self.collect(subscription, publications: 10)
            #expect(Self.offsets(events) == [1, 2, 3, 4, 5])
            #expect(events.last == .ended(code: ClientSubscription.unreadEventsCode, reason: "more than 5 events not read"))
            guard case .subscribed(let first?, _) = events.first else {
                Issue.record("no position in \(events.first.map { "\($0)" } ?? "nothing")")
                return
            }
            let again = try await reader.subscribe("unread", since: StreamPosition(offset: 5, epoch: first.epoch))
            #expect(Self.offsets(await Self.collect(again, publications: 5)) == [6, 7, 8, 9, 10])
            await reader.close()
            await writer.close()
        }
    }

    @Test("requests made before the connection are sent once it is up")
    func queuedUntilConnected() async throws {
        try await TestNode.with { port in
            let client = try Self.client(port: port)
            let published = Task { try await client.publish("early", json: "1") }
            try await Task.sleep(for: .milliseconds(100))
            client.connect()
            #expect(try await published.value?.offset == 1)
            await client.close()
        }
    }

    @Test("channels too many for one connect message are subscribed one by one after it (the node's size limit holds)")
    func connectTooLargeForOneMessage() async throws {
        try await TestNode.with({ $0.maxMessageSize = 400 }) { port in
            let client = try Self.client(port: port) { $0.maximumMessageSize = 400 }
            var subscriptions: [ClientSubscription] = []
            for i in 0..<30 { subscriptions.append(try await client.subscribe("a-longer-channel-name-\(i)")) }
            client.connect()
            // Answered after the subscribes (in order): fails within the request timeout if the
            // connection never comes up (a connect over the node's limit is closed with 1009, again and again).
            #expect(try await client.presenceStats("a-longer-channel-name-29") == PresenceStats(clients: 1, users: 1))
            for subscription in subscriptions {
                let first = await Self.collect(subscription, publications: 0).first
                #expect(first.map { if case .subscribed = $0 { true } else { false } } == true, "\(subscription.channel): \(String(describing: first))")
            }
            await client.close()
        }
    }

    @Test("refused requests: the node's errors come back with their code, bad data and oversize never leave the client")
    func refusals() async throws {
        try await TestNode.with { port in
            let client = try Self.client(port: port) { $0.maximumMessageSize = 1_000 }
            client.connect()
            try await client.connected()
            await #expect(throws: ClientError.self) { try await client.publish("c", json: "{not json") }
            await #expect(throws: ClientError.self) { try await client.publish("c", json: "\"\(String(repeating: "x", count: 2_000))\"") }
            do {
                _ = try await client.history("c", since: StreamPosition(offset: 1, epoch: String(repeating: "e", count: 65)))
                Issue.record("an over-long epoch was taken")
            } catch ClientError.server(let error) {
                #expect(error.code.rawValue == 107)
            }
            do {
                _ = try await client.subscribe("")
                Issue.record("an empty channel name was taken")
            } catch ClientError.invalidRequest {}
            // Still connected: none of this cost the connection.
            #expect(try await client.publish("c", json: "2")?.offset == 1)
            await client.close()
        }
    }

    @Test("after the node drops the connection (3001), the client comes back and recovers every publication it missed, once, in order")
    func recoversAfterDisconnect() async throws {
        try await TestNode.with { port in
            let reader = try Self.client(port: port)
            let writer = try Self.client(port: port)
            reader.connect()
            writer.connect()
            let readerID = try await reader.connected().client
            try await writer.connected()
            let subscription = try await reader.subscribe("feed")
            _ = try await reader.presence("feed")  // the subscribe is answered
            for i in 1...5 { try await writer.publish("feed", json: "\(i)") }
            let (status, body) = try await APIRequest.post(
                port: port, method: "disconnect", body: #"{"client":"\#(readerID)","code":3001,"reason":"test"}"#)
            #expect(status == 200, "\(body)")
            // Published while the reader is away (its first retry waits up to 4 x 100 ms).
            for i in 6...20 { try await writer.publish("feed", json: "\(i)") }
            let events = await Self.collect(subscription, publications: 20)
            #expect(Self.offsets(events) == Array(1...20))
            let subscribes = events.compactMap { if case .subscribed(_, let recovered) = $0 { recovered } else { nil } }
            #expect(subscribes == [true], "the second subscribe recovered")
            // By now the reader is connected again (it recovered): on another connection.
            #expect(try await reader.connected().client != readerID)
            await reader.close()
            await writer.close()
        }
    }

    @Test("a code that forbids reconnecting closes the client: requests fail, subscriptions end")
    func terminalCode() async throws {
        try await TestNode.with { port in
            let client = try Self.client(port: port)
            client.connect()
            let id = try await client.connected().client
            let subscription = try await client.subscribe("c")
            let (status, _) = try await APIRequest.post(port: port, method: "disconnect", body: #"{"client":"\#(id)","code":3502}"#)
            #expect(status == 200)
            var last: SubscriptionEvent?
            for await event in subscription { last = event }
            #expect(last == .ended(code: 3502, reason: "forced"))
            #expect(await client.state == .closed(code: 3502, reason: "forced"))
            await #expect(throws: ClientError.closed(code: 3502, reason: "forced")) { try await client.publish("c", json: "1") }
            // connect() starts again.
            client.connect()
            #expect(try await client.connected().client != id)
            await client.close()
        }
    }

    @Test("a connection that goes silent (a stalled node) is taken for dead after the node's ping interval and the grace, and the client connects again")
    func silentConnection() async throws {
        let node = try await SilentNode(ping: 0.2)
        let client = try Self.client(port: node.port) { $0.silenceGrace = .milliseconds(300) }
        let started = ContinuousClock.now
        let states = await client.watchStates(after: { client.connect() }) { state in
            if case .connected(let result) = state { result.client == "silent-2" } else { false }
        }
        let elapsed = ContinuousClock.now - started
        let clients = states.compactMap { if case .connected(let result) = $0 { result.client } else { nil } }
        let lostWithoutCode = states.contains { if case .disconnected(nil, _) = $0 { true } else { false } }
        #expect(clients == ["silent-1", "silent-2"])
        #expect(lostWithoutCode)
        #expect(elapsed >= .milliseconds(500), "not before ping + grace")
        await client.close()
        await node.stop()
    }

    @Test("with a node that sends no pings (ping 0), the client pings after idlePingInterval: a stalled node is taken for dead after it and the grace; a live one answers and the connection stays")
    func silentConnectionWithoutNodePings() async throws {
        let node = try await SilentNode(ping: 0)
        let client = try Self.client(port: node.port) {
            $0.idlePingInterval = .milliseconds(200)
            $0.silenceGrace = .milliseconds(300)
        }
        let started = ContinuousClock.now
        let states = await client.watchStates(after: { client.connect() }) { state in
            if case .connected(let result) = state { result.client == "silent-2" } else { false }
        }
        let elapsed = ContinuousClock.now - started
        let clients = states.compactMap { if case .connected(let result) = $0 { result.client } else { nil } }
        #expect(clients == ["silent-1", "silent-2"])
        #expect(elapsed >= .milliseconds(500), "not before the idle ping interval + grace")
        await client.close()
        await node.stop()

        try await TestNode.with({ $0.pingInterval = 0 }) { port in
            let live = try Self.client(port: port) {
                $0.idlePingInterval = .milliseconds(200)
                $0.silenceGrace = .seconds(5)  // room for a loaded machine to answer
            }
            live.connect()
            let first = try await live.connected().client
            try await Task.sleep(for: .seconds(6))  // past interval + grace: only answered pings kept it
            #expect(try await live.connected().client == first)
            await live.close()
        }
    }

    @Test("200 clients connected, subscribed and closed leave no socket open, in the client or the node")
    func closingLeavesNothing() async throws {
        try await TestNode.with { port in
            var clients: [SwitchboardClient] = []
            for _ in 0..<200 {
                let client = try Self.client(port: port)
                client.connect()
                clients.append(client)
            }
            for client in clients {
                try await client.connected()
                let subscription = try await client.subscribe("crowd")
                let first = await Self.collect(subscription, publications: 0).first  // the node took it
                #expect(first.map { if case .subscribed = $0 { true } else { false } } == true)
            }
            #expect(try await clients[0].presenceStats("crowd").clients == 200)
            #expect(OpenSockets.count(port: port) == 400, "both ends of 200 connections")
            for client in clients { await client.close() }
            let deadline = ContinuousClock.now + .seconds(5)
            while OpenSockets.count(port: port) > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(OpenSockets.count(port: port) == 0)
        }
    }

    @Test("a node that is not there: the client keeps trying and close() stops it; waiting requests fail as closed")
    func noNode() async throws {
        // A port with no listener: bound, never listening.
        let socket = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = socket.localAddress!.port!
        try await socket.close()
        let client = try Self.client(port: port)
        let request = Task { try await client.ping() }
        // Three attempts, each refused, each followed by a wait (the first state is the one before connect()).
        var disconnects = 0
        var attempted = false
        _ = await client.watchStates(after: { client.connect() }) { state in
            if case .connecting = state { attempted = true }
            if attempted, case .disconnected(nil, _) = state {
                disconnects += 1
                attempted = false
            }
            return disconnects == 3
        }
        #expect(disconnects == 3)
        await client.close()
        await #expect(throws: ClientError.self) { try await request.value }
        #expect(await client.state == .closed(code: nil, reason: "closed by the client"))
    }
}
