import SwitchboardCore
@testable import SwitchboardServer
import Testing

@Suite("Limits that need identity")
struct IdentityLimitsTests {
    @Test("connects per address per second: over the rate is addressRate; the next second admits again; other addresses and exempt ones are not held back")
    func connectRate() {
        var counts = ConnectionCounts(maximum: 1000, maximumPerAddress: 1000, connectsPerAddressPerSecond: 3)
        for _ in 0..<3 { do { let r = counts.admit(address: "a", second: 7); #expect(r == .admitted) } }
        do { let r = counts.admit(address: "a", second: 7); #expect(r == .addressRate) }
        do { let r = counts.admit(address: "b", second: 7); #expect(r == .admitted) }
        do { let r = counts.admit(address: "a", capped: false, second: 7); #expect(r == .admitted, "a trusted proxy is exempt") }
        #expect(counts.total == 5, "a refused connect is not counted as open")
        // Connections still open do not count against the next second's rate.
        do { let r = counts.admit(address: "a", second: 8); #expect(r == .admitted) }
        #expect(counts.connectsThisSecond == ["a": 1], "the rate table holds only this second's addresses")
        // The open-connections cap still applies within the rate.
        var tight = ConnectionCounts(maximum: 1000, maximumPerAddress: 1, connectsPerAddressPerSecond: 5)
        do { let r = tight.admit(address: "a", second: 1); #expect(r == .admitted) }
        do { let r = tight.admit(address: "a", second: 1); #expect(r == .addressFull) }
        // No rate configured: no table at all.
        var open = ConnectionCounts(maximum: 1000, maximumPerAddress: 1000)
        for _ in 0..<100 { do { let r = open.admit(address: "a", second: 1); #expect(r == .admitted) } }
        #expect(open.connectsThisSecond.isEmpty)
    }

    @Test("an address is shed once it has had its allowance and as many refusals with an answer, until the next second; never a trusted proxy")
    func shedding() {
        var counts = ConnectionCounts(maximum: 1000, maximumPerAddress: 1000, connectsPerAddressPerSecond: 3)
        var answers: [ConnectionCounts.Admission] = []
        for _ in 0..<6 {
            let shed = counts.sheds(address: "a", second: 7)
            #expect(!shed, "not before 3 admitted and 3 refused with an answer")
            answers.append(counts.admit(address: "a", second: 7))
        }
        #expect(answers == [.admitted, .admitted, .admitted, .addressRate, .addressRate, .addressRate])
        let flooding = counts.sheds(address: "a", second: 7)
        #expect(flooding)
        let other = counts.sheds(address: "b", second: 7)
        #expect(!other, "another address is not held back")
        let proxy = counts.sheds(address: "a", capped: false, second: 7)
        #expect(!proxy, "a trusted proxy is never shed")
        let nextSecond = counts.sheds(address: "a", second: 8)
        #expect(!nextSecond, "the next second starts afresh")
        #expect(counts.refusedThisSecond.isEmpty && counts.connectsThisSecond.isEmpty)
        var unlimited = ConnectionCounts(maximum: 1000, maximumPerAddress: 1000)
        for _ in 0..<100 { _ = unlimited.admit(address: "a", second: 1) }
        let never = unlimited.sheds(address: "a", second: 1)
        #expect(!never, "no connect rate: nothing is shed")
    }

    @Test("connections per user: the one over the cap is refused, a close makes room, anonymous users and a cap of 0 are not counted")
    func perUser() {
        var users = UserConnectionCounts(maximumPerUser: 2)
        do { let r = users.admit("alice"); #expect(r) }
        do { let r = users.admit("alice"); #expect(r) }
        do { let r = users.admit("alice"); #expect(!r) }
        do { let r = users.admit("bob"); #expect(r) }
        users.release("alice")
        do { let r = users.admit("alice"); #expect(r) }
        for _ in 0..<10 { do { let r = users.admit(""); #expect(r) } }
        #expect(users.byUser == ["alice": 2, "bob": 1])
        users.release("alice")
        users.release("alice")
        users.release("bob")
        users.release("nobody")
        #expect(users.byUser.isEmpty, "only users with a connection open are kept")
        var uncapped = UserConnectionCounts(maximumPerUser: 0)
        for _ in 0..<10 { do { let r = uncapped.admit("alice"); #expect(r) } }
        #expect(uncapped.byUser.isEmpty)
    }

    @Test("the default command rate (100/s, burst 200) lets a client resubscribe 200 channels at once and send 100/s steadily, and closes a 10k/s flood within 50 ms")
    func defaultCommandRate() {
        let limits = ClientLimits()
        #expect(limits.commandsPerSecond == 100 && limits.commandBurst == 200)
        let second: UInt64 = 1_000_000_000
        var client = CommandRateLimiter(rate: limits.commandsPerSecond, burst: limits.commandBurst, now: 0)
        var refused = 0
        // A reconnect: 200 subscribes at once; then 10 s at 90/s.
        for _ in 0..<200 where client.admit(now: 0) != .allow { refused += 1 }
        for i in 0..<UInt64(900) where client.admit(now: second + i * second / 90) != .allow { refused += 1 }
        #expect(refused == 0)
        // The 201st command of a burst is refused (error 111), not executed.
        var burst = CommandRateLimiter(rate: limits.commandsPerSecond, burst: limits.commandBurst, now: 0)
        for _ in 0..<200 { _ = burst.admit(now: 0) }
        #expect(burst.admit(now: 0) != .allow)
        var flood = CommandRateLimiter(rate: limits.commandsPerSecond, burst: limits.commandBurst, now: 0)
        var closedAt: UInt64?
        for i in 0..<UInt64(100_000) {
            let now = i * 100_000  // 10k/s
            if flood.admit(now: now) == .close {
                closedAt = now
                break
            }
        }
        #expect(closedAt != nil && closedAt! < second / 20, "a 10k/s flood closes (3507) within 50 ms")
    }
}

@Suite("Server-side channels of a connection token")
struct ServerSideChannelsTests {
    @Test("the client's subs keep their positions; token channels are granted, added once, after them")
    func merge() {
        let position = StreamPosition(offset: 4, epoch: "e")
        let merged = ClientSession.connectSubs([("a", position), ("b", nil)], serverSide: ["b", "c", "c", "d"])
        #expect(merged.map(\.channel) == ["a", "b", "c", "d"])
        #expect(merged.map(\.granted) == [false, true, true, true])
        #expect(merged[0].since == position)
        #expect(merged.dropFirst().allSatisfy { $0.since == nil })
        let none = ClientSession.connectSubs([("a", position)], serverSide: [])
        #expect(none.count == 1 && none[0].channel == "a" && !none[0].granted && none[0].since == position)
    }
}
