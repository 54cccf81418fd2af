@testable import RedisClient
import Testing

/// Which command an error reply on a subscriber connection answers.
@Suite("RedisSentCommands")
struct RedisSentCommandsTests {
    static func slot(_ name: String) -> UInt16 { RedisHashSlot.slot(of: name) }

    @Test("an error answers the oldest command unanswered: a one-channel SUBSCRIBE is named, a batch or an UNSUBSCRIBE is not")
    func errorsInOrder() {
        var sent = RedisSentCommands()
        #expect(sent.refused(redirectedSlot: nil, slotOf: Self.slot) == .nothing)
        sent.sent(.batch(["a", "b", "probe"]))
        sent.sent(.subscribe("new"))
        // The batch refused whole (an ACL that denies one of its channels): not `new`'s error.
        #expect(sent.refused(redirectedSlot: nil, slotOf: Self.slot) == .unknown)
        #expect(sent.unanswered == [.subscribe("new")])
        sent.subscribeConfirmed("new")
        #expect(sent.unanswered.isEmpty)

        // An UNSUBSCRIBE refused (BUSY) between two SUBSCRIBEs: the next SUBSCRIBE's error is its own.
        sent.sent(.subscribe("x"))
        sent.sent(.unsubscribe("y"))
        sent.sent(.subscribe("z"))
        sent.subscribeConfirmed("x")
        #expect(sent.refused(redirectedSlot: nil, slotOf: Self.slot) == .unknown)
        #expect(sent.refused(redirectedSlot: nil, slotOf: Self.slot) == .subscribe("z"))
        #expect(sent.unanswered.isEmpty)
    }

    @Test("a batch is answered channel by channel; an UNSUBSCRIBE by its confirmation; a MOVED by the oldest command of its slot")
    func confirmationsAndRedirections() throws {
        var sent = RedisSentCommands()
        sent.sent(.batch(["a", "b"]))
        sent.subscribeConfirmed("b")
        #expect(sent.unanswered == [.batch(["a"])])
        sent.subscribeConfirmed("a")
        #expect(sent.unanswered.isEmpty)
        sent.sent(.unsubscribe("u"))
        sent.unsubscribeConfirmed("u")
        #expect(sent.unanswered.isEmpty)
        // Two channels in different slots; the MOVED names the second one's.
        let first = "{tag-1}c", second = try #require((2...500).map { "{tag-\($0)}c" }.first { Self.slot($0) != Self.slot(first) })
        sent.sent(.subscribe(first))
        sent.sent(.subscribe(second))
        #expect(sent.refused(redirectedSlot: Self.slot(second), slotOf: Self.slot) == .subscribe(second))
        #expect(sent.unanswered == [.subscribe(first)])
        sent.removeAll()
        #expect(sent.unanswered.isEmpty)
    }
}
