import SwitchboardCore
import Testing

@Suite("BrokerSubscription")
struct BrokerSubscriptionTests {
    @Test("first want subscribes; success lets the waiting joins go on; release unsubscribes; completion is idle")
    func plainLife() {
        var link = BrokerSubscription()
        #expect(link.isIdle)
        #expect(link.want() == .subscribe)
        #expect(link.want() == .none)
        #expect(!link.isSubscribed)
        #expect(link.subscribeSucceeded() == .joinWaiting)
        #expect(link.isSubscribed)
        #expect(link.want() == .none)
        #expect(link.release() == .unsubscribe)
        #expect(link.unsubscribeCompleted() == .none)
        #expect(link.isIdle)
    }

    @Test("everyone leaving while the subscribe is in flight unsubscribes once it completes")
    func leaveWhileSubscribing() {
        var link = BrokerSubscription()
        #expect(link.want() == .subscribe)
        #expect(link.release() == .none)
        #expect(!link.isIdle)
        #expect(link.subscribeSucceeded() == .unsubscribe)
        #expect(link.state == .unsubscribing(wanted: false))
        #expect(link.unsubscribeCompleted() == .none)
        #expect(link.isIdle)
    }

    @Test("leaving and coming back while subscribing keeps one subscribe")
    func backWhileSubscribing() {
        var link = BrokerSubscription()
        _ = link.want()
        _ = link.release()
        #expect(link.want() == .none)
        #expect(link.subscribeSucceeded() == .joinWaiting)
        #expect(link.isSubscribed)
    }

    @Test("a join while the unsubscribe is in flight subscribes again after it")
    func joinWhileUnsubscribing() {
        var link = BrokerSubscription()
        _ = link.want()
        _ = link.subscribeSucceeded()
        #expect(link.release() == .unsubscribe)
        #expect(link.want() == .none)
        #expect(link.unsubscribeCompleted() == .subscribe)
        #expect(link.state == .subscribing(wanted: true))
        #expect(link.subscribeSucceeded() == .joinWaiting)
    }

    @Test("a failed subscribe refuses waiting joins, or does nothing when nobody waits")
    func failure() {
        var waiting = BrokerSubscription()
        _ = waiting.want()
        #expect(waiting.subscribeFailed() == .failWaiting)
        #expect(waiting.isIdle)
        var abandoned = BrokerSubscription()
        _ = abandoned.want()
        _ = abandoned.release()
        #expect(abandoned.subscribeFailed() == .none)
        #expect(abandoned.isIdle)
    }

    @Test("events that do not belong to a state change nothing")
    func strayEvents() {
        var link = BrokerSubscription()
        #expect(link.release() == .none)
        #expect(link.subscribeSucceeded() == .none)
        #expect(link.subscribeFailed() == .none)
        #expect(link.unsubscribeCompleted() == .none)
        #expect(link.isIdle)
        _ = link.want()
        _ = link.subscribeSucceeded()
        #expect(link.subscribeSucceeded() == .none)
        #expect(link.unsubscribeCompleted() == .none)
        #expect(link.isSubscribed)
    }
}
