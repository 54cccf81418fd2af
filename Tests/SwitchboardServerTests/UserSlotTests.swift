@testable import SwitchboardServer
import Testing

@Suite("UserSlot: what a connection holds under connectionsPerUser")
struct UserSlotTests {
    @Test("admitted by the broker: both counts are given back once, at the end")
    func admitted() {
        var slot = UserSlot()
        slot.begin(user: "alice", connection: "c1")
        #expect(slot.state == .acquiring)
        #expect(slot.answered(.admitted) == .admit(degraded: false))
        #expect(slot.state == .held(inBroker: true))
        #expect(slot.end() == UserSlot.Release(local: true, broker: true))
        #expect(slot.end() == UserSlot.Release(local: false, broker: false), "a second end gives nothing back")
        #expect(slot.user == "alice" && slot.connection == "c1")
    }

    @Test("refused by the broker: the session gives this node's count back itself; the end gives nothing")
    func refused() {
        var slot = UserSlot()
        slot.begin(user: "alice", connection: "c1")
        #expect(slot.answered(.refused) == .refuse)
        #expect(slot.end() == UserSlot.Release(local: false, broker: false))
    }

    @Test("broker unavailable: admitted on this node's count alone (fail-open); only that count is given back")
    func unavailable() {
        var slot = UserSlot()
        slot.begin(user: "alice", connection: "c1")
        #expect(slot.answered(.unavailable) == .admit(degraded: true))
        #expect(slot.end() == UserSlot.Release(local: true, broker: false))
    }

    @Test("closed while the acquire is in flight: this node's count at once, the broker's slot when the answer says it was (or may have been) taken", arguments: [
        (UserSlot.Answer.admitted, UserSlot.AnswerAction.releaseBroker),
        (.refused, .none),
        (.unavailable, .releaseBroker),
    ])
    func closedWhileAcquiring(answer: UserSlot.Answer, expected: UserSlot.AnswerAction) {
        var slot = UserSlot()
        slot.begin(user: "alice", connection: "c1")
        #expect(slot.end() == UserSlot.Release(local: true, broker: false))
        #expect(slot.state == .abandoned)
        #expect(slot.end() == UserSlot.Release(local: false, broker: false), "a second close gives nothing back")
        #expect(slot.answered(answer) == expected)
        #expect(slot.state == .done)
        #expect(slot.answered(.admitted) == .none, "a repeated answer releases nothing twice")
        #expect(slot.end() == UserSlot.Release(local: false, broker: false))
    }

    @Test("an uncounted connection holds nothing and ignores answers")
    func uncounted() {
        var slot = UserSlot()
        #expect(slot.answered(.admitted) == .none)
        #expect(slot.end() == UserSlot.Release(local: false, broker: false))
        var held = UserSlot()
        held.begin(user: "bob", connection: "c2")
        _ = held.answered(.admitted)
        #expect(held.answered(.refused) == .none, "a late answer does not undo an admission")
        held.begin(user: "carol", connection: "c3")
        #expect(held.user == "bob" && held.state == .held(inBroker: true), "begin only starts from uncounted")
    }
}
