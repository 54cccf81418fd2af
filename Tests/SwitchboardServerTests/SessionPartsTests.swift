import NIOCore
import SwitchboardCore
@testable import SwitchboardServer
import Testing

@Suite("ReplyQueue")
struct ReplyQueueTests {
    @Test("replies completed out of order go out in command order")
    func order() {
        var queue = ReplyQueue<String>()
        let a = queue.reserve(), b = queue.reserve(), c = queue.reserve()
        queue.fill(c, "c")
        #expect(queue.popReady() == nil)
        queue.fill(a, "a")
        #expect(queue.popReady() == "a")
        #expect(queue.popReady() == nil)
        queue.fill(b, "b")
        #expect(queue.popReady() == "b")
        #expect(queue.popReady() == "c")
        #expect(queue.isEmpty)
    }

    @Test("a slot is filled once; unknown and released slots are ignored")
    func strayFills() {
        var queue = ReplyQueue<Int>()
        let a = queue.reserve()
        queue.fill(a, 1)
        queue.fill(a, 2)
        queue.fill(a + 5, 9)
        #expect(queue.popReady() == 1)
        #expect(queue.popReady() == nil)
        let b = queue.reserve()
        queue.removeAll()
        queue.fill(b, 3)
        #expect(queue.popReady() == nil)
        #expect(queue.isEmpty)
        let c = queue.reserve()
        queue.fill(c, 4)
        #expect(queue.popReady() == 4)
    }

    @Test("a long run of replies with one outstanding keeps order and compacts")
    func longRun() {
        var queue = ReplyQueue<Int>()
        let first = queue.reserve()
        var sequences: [UInt64] = []
        for _ in 0..<1000 { sequences.append(queue.reserve()) }
        for (i, s) in sequences.enumerated() { queue.fill(s, i + 1) }
        #expect(queue.popReady() == nil)
        queue.fill(first, 0)
        var out: [Int] = []
        while let r = queue.popReady() { out.append(r) }
        #expect(out == Array(0...1000))
        #expect(queue.isEmpty)
    }
}

@Suite("SessionLiveness")
struct SessionLivenessTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    @Test("no connect within the deadline closes with 3501")
    func connectDeadline() {
        var liveness = SessionLiveness(now: start, connectTimeout: .seconds(10))
        #expect(liveness.tick(now: start + .seconds(9), pingInterval: 25, pongTimeout: 10, expectsPong: true) == .none)
        #expect(liveness.tick(now: start + .seconds(10), pingInterval: 25, pongTimeout: 10, expectsPong: true)
            == .close(DisconnectCode(3501, "no connect command"), push: false))
    }

    @Test("silence brings a ping; no answer within the pong timeout closes with 3006; an answer keeps it")
    func pingPong() {
        var liveness = SessionLiveness(now: start)
        liveness.didConnect(tokenExpiry: nil)
        #expect(liveness.tick(now: start + .seconds(20), pingInterval: 25, pongTimeout: 10, expectsPong: true) == .none)
        #expect(liveness.tick(now: start + .seconds(25), pingInterval: 25, pongTimeout: 10, expectsPong: true) == .ping)
        liveness.didWritePing()
        #expect(liveness.isAwaitingPong)
        #expect(liveness.tick(now: start + .seconds(30), pingInterval: 25, pongTimeout: 10, expectsPong: true) == .none)
        #expect(liveness.tick(now: start + .seconds(35), pingInterval: 25, pongTimeout: 10, expectsPong: true) == .close(.noPong, push: false))

        var answered = SessionLiveness(now: start)
        answered.didConnect(tokenExpiry: nil)
        _ = answered.tick(now: start + .seconds(25), pingInterval: 25, pongTimeout: 10, expectsPong: true)
        answered.didReceive()
        #expect(!answered.isAwaitingPong)
        #expect(answered.tick(now: start + .seconds(35), pingInterval: 25, pongTimeout: 10, expectsPong: true) == .none)
        #expect(answered.tick(now: start + .seconds(50), pingInterval: 25, pongTimeout: 10, expectsPong: true) == .ping)
    }

    @Test("writes count as activity: a busy connection is not pinged")
    func writesDelayPings() {
        var liveness = SessionLiveness(now: start)
        liveness.didConnect(tokenExpiry: nil)
        for second in stride(from: 5, through: 60, by: 5) {
            liveness.didWrite()
            #expect(liveness.tick(now: start + .seconds(Int64(second)), pingInterval: 25, pongTimeout: 10, expectsPong: true) == .none)
        }
    }

    @Test("transports that cannot answer get keep-alive pings and are never closed for a missing pong")
    func keepAliveOnly() {
        var liveness = SessionLiveness(now: start)
        liveness.didConnect(tokenExpiry: nil)
        #expect(liveness.tick(now: start + .seconds(25), pingInterval: 25, pongTimeout: 10, expectsPong: false) == .ping)
        #expect(!liveness.isAwaitingPong)
        #expect(liveness.tick(now: start + .seconds(50), pingInterval: 25, pongTimeout: 10, expectsPong: false) == .ping)
    }

    @Test("an expired token closes with 3503 and a push; no pings when the interval is 0")
    func token() {
        var liveness = SessionLiveness(now: start, refreshGrace: .seconds(25))
        liveness.didConnect(tokenExpiry: start + .seconds(30))
        #expect(liveness.tick(now: start + .seconds(100), pingInterval: 0, pongTimeout: 10, expectsPong: true) == .close(.tokenExpired, push: true))
        var silent = SessionLiveness(now: start)
        silent.didConnect(tokenExpiry: nil)
        #expect(silent.tick(now: start + .seconds(1000), pingInterval: 0, pongTimeout: 10, expectsPong: true) == .none)
    }

    @Test("a connection token: ttl counts down, the close waits for expiry plus the grace, a refresh moves it")
    func tokenGraceAndRefresh() {
        var liveness = SessionLiveness(now: start, refreshGrace: .seconds(25))
        liveness.didConnect(tokenExpiry: start + .seconds(30))
        #expect(liveness.tokenTTL(now: start) == 30)
        #expect(liveness.tokenTTL(now: start + .milliseconds(10_500)) == 19)
        #expect(liveness.tokenTTL(now: start + .seconds(40)) == 0)
        // Expired but within the grace: nothing yet.
        #expect(liveness.tick(now: start + .seconds(54), pingInterval: 0, pongTimeout: 10, expectsPong: true) == .none)
        // Refreshed within the grace: the new expiry counts.
        liveness.didRefresh(tokenExpiry: start + .seconds(120))
        #expect(liveness.tokenTTL(now: start + .seconds(54)) == 66)
        #expect(liveness.tick(now: start + .seconds(144), pingInterval: 0, pongTimeout: 10, expectsPong: true) == .none)
        #expect(liveness.tick(now: start + .seconds(145), pingInterval: 0, pongTimeout: 10, expectsPong: true) == .close(.tokenExpired, push: true))
        // A refresh with a token that never expires ends the deadline.
        var forever = SessionLiveness(now: start, refreshGrace: .seconds(25))
        forever.didConnect(tokenExpiry: start + .seconds(1))
        forever.didRefresh(tokenExpiry: nil)
        #expect(forever.tokenTTL(now: start) == nil)
        #expect(forever.tick(now: start + .seconds(10_000), pingInterval: 0, pongTimeout: 10, expectsPong: true) == .none)
    }

    @Test("subscription tokens: each channel ends after its expiry plus the grace, once; refreshed or removed ones do not")
    func subscriptionExpiries() {
        var liveness = SessionLiveness(now: start, refreshGrace: .seconds(5))
        liveness.didConnect(tokenExpiry: nil)
        liveness.setSubscriptionExpiry("a", start + .seconds(10))
        liveness.setSubscriptionExpiry("b", start + .seconds(20))
        liveness.setSubscriptionExpiry("c", start + .seconds(10))
        liveness.setSubscriptionExpiry("d", nil)
        #expect(liveness.subscriptionTTL("a", now: start) == 10)
        #expect(liveness.subscriptionTTL("d", now: start) == nil)
        #expect(liveness.subscriptionTTL("zz", now: start) == nil)
        #expect(liveness.expiredSubscriptions(now: start + .seconds(14)) == [])
        liveness.setSubscriptionExpiry("c", start + .seconds(60))  // refreshed
        #expect(liveness.expiredSubscriptions(now: start + .seconds(15)) == ["a"])
        #expect(liveness.expiredSubscriptions(now: start + .seconds(15)) == [], "reported once")
        liveness.setSubscriptionExpiry("b", nil)  // unsubscribed (or refreshed without exp)
        #expect(liveness.expiredSubscriptions(now: start + .seconds(30)) == [])
        #expect(liveness.expiredSubscriptions(now: start + .seconds(65)) == ["c"])
        #expect(liveness.subscriptionTTL("c", now: start + .seconds(65)) == nil, "forgotten once reported")
        // The connection itself is unaffected by subscription expiries.
        #expect(liveness.tick(now: start + .seconds(65), pingInterval: 0, pongTimeout: 10, expectsPong: true) == .none)
    }
}
