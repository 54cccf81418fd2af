import SwitchboardCore
@testable import SwitchboardServer
import SwitchboardServerTesting
import Testing

@Suite("Session subscriptions table")
struct SessionSubscriptionsTests {
    @Test("lookups, replacement and removal stay right below, at and past the inline limit")
    func table() throws {
        let node = try EmbeddedNode()
        let session = ClientSession(node: node.context, fanout: node.context.fanouts[0])
        var table = SessionSubscriptions()
        var made: [String: SessionSubscription] = [:]
        for i in 0..<(SessionSubscriptions.inlineLimit * 2) {
            let channel = "c\(i)"
            let subscription = SessionSubscription(session: session, id: UInt64(i), channel: channel, options: NamespaceOptions())
            made[channel] = subscription
            table[channel] = subscription
            #expect(table.count == i + 1)
            for (name, expected) in made { #expect(table[name] === expected, "\(name) after \(i + 1)") }
            #expect(table["missing"] == nil)
        }
        #expect(Set(table.values.map(\.channel)) == Set(made.keys))
        #expect(table.removeValue(forKey: "c3") === made["c3"])
        #expect(table.removeValue(forKey: "c3") == nil)
        #expect(table.count == SessionSubscriptions.inlineLimit * 2 - 1)
        table.removeAll()
        #expect(table.count == 0 && table.values.isEmpty)
        var small = SessionSubscriptions()
        small["c0"] = made["c0"]
        small["c1"] = made["c1"]
        small["c0"] = nil
        #expect(small.count == 1)
        #expect(small["c1"] === made["c1"])
        #expect(small["c0"] == nil)
    }
}
