import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore
import Testing

@testable import SwitchboardClient

/// The client against a fake node whose answers each test writes (`ScriptedNode`): what a real node
/// does not do on demand, such as losing a reply.
@Suite("Swift client against a scripted node", .serialized, .timeLimit(.minutes(1)))
struct ClientScriptedNodeTests {
    @Test("a subscribe the node never answers is given up at requestTimeout on the same connection: unsubscribe, then subscribe again after the retry delay; its late answer and what it pushed are ignored, nothing is doubled")
    func subscribeDeadline() async throws {
        let lost = NIOLockedValueBox<UInt64?>(nil)
        let node = try await ScriptedNode { command in
            switch command.method {
            case "subscribe":
                let first = lost.withLockedValue { lost in
                    guard lost == nil else { return false }
                    lost = command.id
                    return true
                }
                if first { return [] }  // its reply is lost
                return [
                    #"{"id":\#(command.id),"result":{"offset":7,"epoch":"e","recoverable":true}}"#,
                    #"{"channel":"chat","pub":{"offset":8,"data":{"n":8}}}"#,
                ]
            case "unsubscribe":
                // The lost reply turns up late, and the subscription it made pushes on, before the
                // unsubscribe's own answer.
                let first = lost.withLockedValue { $0 } ?? 0
                return [
                    #"{"id":\#(first),"result":{"offset":5,"epoch":"late","recoverable":true}}"#,
                    #"{"channel":"chat","pub":{"offset":6,"data":{"n":6}}}"#,
                    #"{"id":\#(command.id),"result":{}}"#,
                ]
            default:
                return nil
            }
        }
        let client = try ClientLoopbackTests.client(port: node.port) { $0.requestTimeout = .milliseconds(1500) }
        client.connect()
        try await client.connected()
        let subscription = try await client.subscribe("chat")
        let events = await ClientLoopbackTests.collect(subscription, publications: 1)
        #expect(events.first == .subscribed(position: StreamPosition(offset: 7, epoch: "e"), recovered: nil))
        #expect(events.count == 2 && ClientLoopbackTests.offsets(events) == [8], "\(events)")
        // Past the answered subscribe's deadline: it does nothing.
        try await Task.sleep(for: .milliseconds(2000))
        let chat = node.commands.filter { $0.channel == "chat" }
        #expect(chat.map(\.method) == ["subscribe", "unsubscribe", "subscribe"])
        if chat.count == 3 {
            // (Timed where the node reads them, which a loaded machine can shift: bounds with slack.)
            #expect(chat[1].received - chat[0].received >= .milliseconds(1000), "given up at requestTimeout, not before")
            #expect(chat[2].received - chat[1].received >= .milliseconds(250), "made again after the retry delay (0.5-1.5 s)")
        }
        #expect(node.connections == 1, "not a reconnect")
        #expect(await client.state.isConnected)
        await client.close()
        await node.stop()
    }

    @Test("a node that never answers unsubscribes cannot grow what the client waits for: nothing waits for an unsubscribe's answer")
    func unansweredUnsubscribes() async throws {
        let node = try await ScriptedNode { command in
            command.method == "unsubscribe" ? [] : nil  // its answer is lost; everything else answered
        }
        let client = try ClientLoopbackTests.client(port: node.port)
        client.connect()
        try await client.connected()
        for i in 0..<50 {
            _ = try await client.subscribe("c\(i)")
            await client.unsubscribe("c\(i)")
        }
        // A request after them all is answered in order: every unsubscribe has gone out by then.
        _ = try await client.publish("c0", json: #""x""#)
        #expect(node.commands.filter { $0.method == "unsubscribe" }.count == 50)
        #expect(await client.answersAwaited == 0)
        await client.close()
        await node.stop()
    }

    @Test("a node that takes each subscribe and removes it again at once (2500) is not asked in a loop: the first removal subscribes again at once, the next ones after a growing delay")
    func repeatedInsufficientState() async throws {
        let node = try await ScriptedNode { command in
            guard command.method == "subscribe" else { return nil }
            let recovered = command.since == nil ? "" : #","recovered":true"#
            return [
                #"{"id":\#(command.id),"result":{"offset":3,"epoch":"e","recoverable":true\#(recovered)}}"#,
                #"{"channel":"chat","unsubscribe":{"code":2500,"reason":"insufficient state"}}"#,
            ]
        }
        let client = try ClientLoopbackTests.client(port: node.port)
        client.connect()
        try await client.connected()
        let subscription = try await client.subscribe("chat")
        try await Task.sleep(for: .milliseconds(1200))
        let subscribes = node.commands.filter { $0.method == "subscribe" }
        // At once, at once again (the first 2500), then after 0.5-1.5 s, then after 1-3 s more.
        #expect((2...3).contains(subscribes.count), "\(subscribes.count) subscribes in 1.2 s")
        #expect(subscribes.dropFirst().allSatisfy { $0.since == "3:e" }, "again from the position")
        if subscribes.count == 3 {
            #expect(subscribes[2].received - subscribes[1].received >= .milliseconds(250), "after the retry delay (0.5-1.5 s)")
        }
        #expect(node.connections == 1)
        await client.close()
        await node.stop()
        _ = subscription
    }
}
