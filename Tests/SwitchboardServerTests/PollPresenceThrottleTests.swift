import NIOCore
import Testing

@testable import SwitchboardServer

@Suite("Long-poll presence writes, per loop")
struct PollPresenceThrottleTests {
    let t0 = NIODeadline.uptimeNanoseconds(10_000_000_000)
    let ttl = TimeAmount.seconds(20)

    @Test("a poller's entry is written again only once half its time is used up; each channel and poller on its own")
    func halfLife() {
        var throttle = PollPresenceThrottle()
        do { let wrote = throttle.shouldWrite(channel: "a", poller: "lp-1", ttl: self.ttl, now: self.t0); #expect(wrote) }
        do { let wrote = throttle.shouldWrite(channel: "a", poller: "lp-1", ttl: self.ttl, now: self.t0 + .seconds(1)); #expect(!wrote, "a poll right after") }
        do { let wrote = throttle.shouldWrite(channel: "b", poller: "lp-1", ttl: self.ttl, now: self.t0 + .seconds(1)); #expect(wrote, "another channel") }
        do { let wrote = throttle.shouldWrite(channel: "a", poller: "lp-2", ttl: self.ttl, now: self.t0 + .seconds(1)); #expect(wrote, "another poller") }
        do { let wrote = throttle.shouldWrite(channel: "a", poller: "lp-1", ttl: self.ttl, now: self.t0 + .seconds(9)); #expect(!wrote, "more than half left") }
        do { let wrote = throttle.shouldWrite(channel: "a", poller: "lp-1", ttl: self.ttl, now: self.t0 + .seconds(11)); #expect(wrote, "half used up: refreshed") }
        do { let wrote = throttle.shouldWrite(channel: "a", poller: "lp-1", ttl: self.ttl, now: self.t0 + .seconds(12)); #expect(!wrote) }
    }

    @Test("bounded: past its capacity it forgets everything (more writes, never a table that grows); expired entries are swept")
    func bounded() {
        var throttle = PollPresenceThrottle(capacity: 100)
        for i in 0..<100 { _ = throttle.shouldWrite(channel: "c", poller: "lp-\(i)", ttl: self.ttl, now: self.t0) }
        #expect(throttle.count == 100)
        do { let wrote = throttle.shouldWrite(channel: "c", poller: "lp-new", ttl: self.ttl, now: self.t0); #expect(wrote) }
        #expect(throttle.count == 1)
        do { let wrote = throttle.shouldWrite(channel: "c", poller: "lp-0", ttl: self.ttl, now: self.t0); #expect(wrote, "forgotten: written again") }
        _ = throttle.shouldWrite(channel: "d", poller: "lp-short", ttl: .seconds(1), now: self.t0)
        throttle.dropExpired(now: self.t0 + .seconds(2))
        #expect(throttle.count == 2, "the 1 s entry is gone, the 20 s ones stay")
    }

    @Test("an address lists at most `most` live pollers; one listed already is refreshed; an expired one frees a place; bounded overall")
    func pollersPerAddress() {
        var throttle = PollPresenceThrottle(capacity: 50)
        for i in 0..<4 {
            let admitted = throttle.admitsPoller("lp-\(i)", address: "10.0.0.1", most: 4, ttl: self.ttl, now: self.t0)
            #expect(admitted)
        }
        do { let admitted = throttle.admitsPoller("lp-new", address: "10.0.0.1", most: 4, ttl: self.ttl, now: self.t0); #expect(!admitted) }
        do { let admitted = throttle.admitsPoller("lp-2", address: "10.0.0.1", most: 4, ttl: self.ttl, now: self.t0 + .seconds(5)); #expect(admitted) }
        do { let admitted = throttle.admitsPoller("lp-other", address: "10.0.0.2", most: 4, ttl: self.ttl, now: self.t0); #expect(admitted) }
        // lp-0, 1 and 3 expire at t0 + 20 s; lp-2 (refreshed) at t0 + 25 s.
        do { let admitted = throttle.admitsPoller("lp-new", address: "10.0.0.1", most: 4, ttl: self.ttl, now: self.t0 + .seconds(21)); #expect(admitted) }
        #expect(throttle.pollers == 3, "lp-2, lp-new, lp-other")
        throttle.dropExpired(now: self.t0 + .seconds(60))
        #expect(throttle.pollers == 0)
        for i in 0..<200 { _ = throttle.admitsPoller("lp-\(i)", address: "10.1.\(i).1", most: 4, ttl: self.ttl, now: self.t0) }
        #expect(throttle.pollers <= 50)
    }
}
