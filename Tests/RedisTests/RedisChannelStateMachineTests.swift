@testable import RedisClient
import Testing

/// Every transition of one channel's subscription, without sockets.
@Suite("RedisChannelStateMachine")
struct RedisChannelStateMachineTests {
    typealias Machine = RedisChannelStateMachine<String>

    func name(_ machine: Machine) -> String {
        switch machine.state {
        case .unsubscribed: "unsubscribed"
        case .pending(let e): "pending\(e.map(\.waiter))"
        case .subscribing(let e): "subscribing\(e.map(\.waiter))"
        case .subscribingThenUnsubscribe(let e): "subscribingThenUnsubscribe\(e.map(\.waiter))"
        case .subscribed: "subscribed"
        case .unsubscribing: "unsubscribing"
        case .unsubscribingThenSubscribe(let e): "unsubscribingThenSubscribe\(e.map(\.waiter))"
        }
    }

    @Test("subscribe sends SUBSCRIBE once; callers complete with the confirmation; delivery only when subscribed")
    func subscribe() {
        var m = Machine()
        var a = m.subscribe(id: 1, waiter: "a", connected: true)
        #expect(a.send == .subscribe && name(m) == "subscribing[\"a\"]" && !m.isDelivering)
        a = m.subscribe(id: 2, waiter: "b", connected: true)
        #expect(a.send == nil && name(m) == "subscribing[\"a\", \"b\"]")
        a = m.subscribeConfirmed()
        #expect(a.succeed == ["a", "b"] && a.send == nil && name(m) == "subscribed" && m.isDelivering)
        a = m.subscribe(id: 3, waiter: "c", connected: true)
        #expect(a.succeed == ["c"] && a.send == nil)
        a = m.subscribeConfirmed()  // not ours: no SUBSCRIBE unconfirmed
        #expect(a.succeed.isEmpty && name(m) == "subscribed")
    }

    @Test("unsubscribe while subscribing sends UNSUBSCRIBE when the subscribe is confirmed")
    func unsubscribeWhileSubscribing() {
        var m = Machine()
        _ = m.subscribe(id: 1, waiter: "a", connected: true)
        var a = m.unsubscribe()
        #expect(a.send == nil && name(m) == "subscribingThenUnsubscribe[\"a\"]" && !m.isDelivering)
        a = m.unsubscribe()
        #expect(a.send == nil)
        a = m.subscribeConfirmed()
        #expect(a.send == .unsubscribe && a.succeed == ["a"] && name(m) == "unsubscribing" && !m.isDelivering)
        a = m.unsubscribeConfirmed()
        #expect(a.send == nil && m.isUnsubscribed)
    }

    @Test("subscribe again while subscribing-then-unsubscribe keeps the subscription (no UNSUBSCRIBE)")
    func resubscribeBeforeConfirmation() {
        var m = Machine()
        _ = m.subscribe(id: 1, waiter: "a", connected: true)
        _ = m.unsubscribe()
        var a = m.subscribe(id: 2, waiter: "b", connected: true)
        #expect(a.send == nil && name(m) == "subscribing[\"a\", \"b\"]")
        a = m.subscribeConfirmed()
        #expect(a.send == nil && a.succeed == ["a", "b"] && m.isDelivering)
    }

    @Test("unsubscribe when subscribed; subscribe while unsubscribing sends SUBSCRIBE after the confirmation")
    func subscribeWhileUnsubscribing() {
        var m = Machine()
        _ = m.subscribe(id: 1, waiter: "a", connected: true)
        _ = m.subscribeConfirmed()
        var a = m.unsubscribe()
        #expect(a.send == .unsubscribe && name(m) == "unsubscribing" && !m.isDelivering)
        a = m.subscribe(id: 2, waiter: "b", connected: true)
        #expect(a.send == nil && name(m) == "unsubscribingThenSubscribe[\"b\"]")
        a = m.subscribeConfirmed()  // stray: ignored
        #expect(a.send == nil && name(m) == "unsubscribingThenSubscribe[\"b\"]")
        a = m.unsubscribeConfirmed()
        #expect(a.send == .subscribe && name(m) == "subscribing[\"b\"]")
        a = m.subscribeConfirmed()
        #expect(a.succeed == ["b"] && m.isDelivering)
    }

    @Test("unsubscribe while unsubscribing-then-subscribe fails the new callers and stays unsubscribing")
    func unsubscribeAgain() {
        var m = Machine()
        _ = m.subscribe(id: 1, waiter: "a", connected: true)
        _ = m.subscribeConfirmed()
        _ = m.unsubscribe()
        _ = m.subscribe(id: 2, waiter: "b", connected: true)
        let a = m.unsubscribe()
        #expect(a.fail == ["b"] && a.send == nil && name(m) == "unsubscribing")
        let confirmed = m.unsubscribeConfirmed()
        #expect(confirmed.send == nil && m.isUnsubscribed)
    }

    @Test("a timed-out caller is forgotten; the last one withdraws the subscription")
    func timeouts() {
        var m = Machine()
        _ = m.subscribe(id: 1, waiter: "a", connected: true)
        _ = m.subscribe(id: 2, waiter: "b", connected: true)
        var a = m.timedOut(id: 1)
        #expect(a.fail == ["a"] && name(m) == "subscribing[\"b\"]")
        a = m.timedOut(id: 1)  // twice: nothing more
        #expect(a.fail.isEmpty)
        a = m.timedOut(id: 2)
        #expect(a.fail == ["b"] && name(m) == "subscribingThenUnsubscribe[]")
        a = m.subscribeConfirmed()
        #expect(a.send == .unsubscribe && a.succeed.isEmpty && name(m) == "unsubscribing")
        // Not connected: the SUBSCRIBE was never sent, so a timeout just drops it.
        var p = Machine()
        _ = p.subscribe(id: 7, waiter: "p", connected: false)
        #expect(name(p) == "pending[\"p\"]")
        a = p.timedOut(id: 7)
        #expect(a.fail == ["p"] && p.isUnsubscribed)
        // While unsubscribing: the re-subscribe is dropped, the UNSUBSCRIBE in flight stays.
        var u = Machine()
        _ = u.subscribe(id: 1, waiter: "a", connected: true)
        _ = u.subscribeConfirmed()
        _ = u.unsubscribe()
        _ = u.subscribe(id: 9, waiter: "z", connected: true)
        a = u.timedOut(id: 9)
        #expect(a.fail == ["z"] && name(u) == "unsubscribing")
        // Subscribed or unsubscribed: a late timeout changes nothing.
        var s = Machine()
        _ = s.subscribe(id: 1, waiter: "a", connected: true)
        _ = s.subscribeConfirmed()
        let late = s.timedOut(id: 1)
        #expect(late.fail.isEmpty && s.isDelivering)
    }

    @Test("without a connection nothing is sent; the next connection subscribes what is wanted")
    func pendingUntilConnected() {
        var m = Machine()
        var a = m.subscribe(id: 1, waiter: "a", connected: false)
        #expect(a.send == nil && name(m) == "pending[\"a\"]")
        a = m.subscribe(id: 2, waiter: "b", connected: false)
        #expect(name(m) == "pending[\"a\", \"b\"]")
        let sent = m.connected(adding: [(id: 0, waiter: "r")])
        #expect(sent)
        #expect(name(m) == "subscribing[\"a\", \"b\", \"r\"]")
        let again = m.connected()
        #expect(!again)  // only a pending channel is sent
        var n = Machine()
        _ = n.subscribe(id: 1, waiter: "a", connected: false)
        a = n.unsubscribe()
        #expect(a.fail == ["a"] && n.isUnsubscribed)
    }

    @Test("a connection lost again before the resubscribe was confirmed: the next one carries the owner's resubscribe waiter once, not once per connection")
    func resubscribeWaiterOncePerConnection() {
        var machine = Machine()
        _ = machine.subscribe(id: 1, waiter: "caller", connected: true)
        _ = machine.subscribeConfirmed()
        _ = machine.connectionLost()
        #expect(machine.connected(adding: [(id: 0, waiter: "resubscribe")]) as Bool)
        _ = machine.connectionLost()
        #expect(name(machine) == "pending[\"resubscribe\"]")
        #expect(machine.connected(adding: [(id: 0, waiter: "resubscribe")]) as Bool)
        #expect(name(machine) == "subscribing[\"resubscribe\"]")
        #expect(machine.subscribeConfirmed().succeed == ["resubscribe"])
    }

    @Test("after a lost connection, only a channel that was delivering is owed the owner's catch-up; one awaiting its first confirmation is not")
    func owedCatchUp() {
        var delivering = Machine()
        _ = delivering.subscribe(id: 1, waiter: "a", connected: true)
        _ = delivering.subscribeConfirmed()
        _ = delivering.connectionLost()
        #expect(delivering.wasDelivering(resubscribeID: 0))
        var unconfirmed = Machine()
        _ = unconfirmed.subscribe(id: 1, waiter: "a", connected: true)
        #expect(unconfirmed.awaitsSubscribeConfirmation && unconfirmed.isSubscribingAndWanted)
        _ = unconfirmed.connectionLost()
        #expect(!unconfirmed.wasDelivering(resubscribeID: 0))
        var withdrawn = Machine()
        _ = withdrawn.subscribe(id: 1, waiter: "a", connected: true)
        _ = withdrawn.unsubscribe()
        #expect(withdrawn.awaitsSubscribeConfirmation && !withdrawn.isSubscribingAndWanted)
    }

    @Test("a lost connection: wanted channels wait for the next one, unwanted ones are gone")
    func connectionLost() {
        var subscribed = Machine()
        _ = subscribed.subscribe(id: 1, waiter: "a", connected: true)
        _ = subscribed.subscribeConfirmed()
        let lost = subscribed.connectionLost()
        #expect(lost.fail.isEmpty && name(subscribed) == "pending[]" && !subscribed.isDelivering)

        var subscribing = Machine()
        _ = subscribing.subscribe(id: 1, waiter: "a", connected: true)
        _ = subscribing.connectionLost()
        #expect(name(subscribing) == "pending[\"a\"]")

        var withdrawing = Machine()
        _ = withdrawing.subscribe(id: 1, waiter: "a", connected: true)
        _ = withdrawing.unsubscribe()
        let dropped = withdrawing.connectionLost()
        #expect(dropped.fail == ["a"] && withdrawing.isUnsubscribed)

        var unsubscribing = Machine()
        _ = unsubscribing.subscribe(id: 1, waiter: "a", connected: true)
        _ = unsubscribing.subscribeConfirmed()
        _ = unsubscribing.unsubscribe()
        _ = unsubscribing.connectionLost()
        #expect(unsubscribing.isUnsubscribed)

        var back = Machine()
        _ = back.subscribe(id: 1, waiter: "a", connected: true)
        _ = back.subscribeConfirmed()
        _ = back.unsubscribe()
        _ = back.subscribe(id: 2, waiter: "b", connected: true)
        _ = back.connectionLost()
        #expect(name(back) == "pending[\"b\"]")
        let closed = back.close()
        #expect(closed == ["b"] && back.isUnsubscribed)
    }

    @Test("a refused SSUBSCRIBE (MOVED) fails its callers and holds nothing; in any other state it changes nothing")
    func subscribeRefused() {
        var m = Machine()
        _ = m.subscribe(id: 1, waiter: "a", connected: true)
        _ = m.subscribe(id: 2, waiter: "b", connected: true)
        var a = m.subscribeRefused()
        #expect(a.fail == ["a", "b"] && a.send == nil && m.isUnsubscribed)

        _ = m.subscribe(id: 3, waiter: "c", connected: true)
        _ = m.unsubscribe()
        a = m.subscribeRefused()  // subscribingThenUnsubscribe: nothing to UNSUBSCRIBE after a refusal
        #expect(a.fail == ["c"] && a.send == nil && m.isUnsubscribed)

        for (state, setUp) in [
            ("pending[\"d\"]", { (m: inout Machine) in _ = m.subscribe(id: 4, waiter: "d", connected: false) }),
            ("subscribed", { (m: inout Machine) in _ = m.subscribe(id: 4, waiter: "d", connected: true); _ = m.subscribeConfirmed() }),
        ] {
            var other = Machine()
            setUp(&other)
            let none = other.subscribeRefused()
            #expect(none.fail.isEmpty && none.send == nil && name(other) == state)
        }
    }

    @Test("Redis dropping a confirmed subscription unasked (slot moved) leaves nothing held; a confirmation of our own UNSUBSCRIBE is not a drop")
    func droppedByServer() {
        var m = Machine()
        _ = m.subscribe(id: 1, waiter: "a", connected: true)
        let early = m.droppedByServer()
        #expect(!early, "not confirmed yet: nothing delivered, nothing dropped")
        #expect(name(m) == "subscribing[\"a\"]")
        _ = m.subscribeConfirmed()
        let dropped = m.droppedByServer()
        #expect(dropped && m.isUnsubscribed && !m.isDelivering)

        var ours = Machine()
        _ = ours.subscribe(id: 1, waiter: "a", connected: true)
        _ = ours.subscribeConfirmed()
        _ = ours.unsubscribe()
        let confirmation = ours.droppedByServer()
        #expect(!confirmation && name(ours) == "unsubscribing")
        _ = ours.unsubscribeConfirmed()
        #expect(ours.isUnsubscribed)
    }
}
