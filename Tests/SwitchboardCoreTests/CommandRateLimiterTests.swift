import SwitchboardCore
import Testing

@Suite("CommandRateLimiter")
struct CommandRateLimiterTests {
    static let second: UInt64 = 1_000_000_000

    /// Decisions for commands at `times` (nanoseconds).
    static func decisions(_ limiter: inout CommandRateLimiter, at times: [UInt64]) -> [CommandRateLimiter.Decision] {
        times.map { limiter.admit(now: $0) }
    }

    @Test("a burst up to the bucket size passes, the next is refused")
    func burst() {
        var limiter = CommandRateLimiter(rate: 100, burst: 200, now: 0)
        let results = Self.decisions(&limiter, at: Array(repeating: 0, count: 201))
        #expect(results.prefix(200).allSatisfy { $0 == .allow })
        #expect(results.last == .refuse)
    }

    @Test("tokens refill at the rate, never above the burst")
    func refill() {
        var limiter = CommandRateLimiter(rate: 100, burst: 200, now: 0)
        _ = Self.decisions(&limiter, at: Array(repeating: 0, count: 200))
        // 10 ms = 1 token.
        #expect(Self.decisions(&limiter, at: [Self.second / 100, Self.second / 100]) == [.allow, .refuse])
        // After an hour idle, still only the burst.
        let later = 3600 * Self.second
        let results = Self.decisions(&limiter, at: Array(repeating: later, count: 201))
        #expect(results.filter { $0 == .allow }.count == 200)
    }

    @Test("a steady 100/s is never refused")
    func steady() {
        var limiter = CommandRateLimiter(rate: 100, burst: 200, now: 0)
        let results = Self.decisions(&limiter, at: (0..<10_000).map { UInt64($0) * Self.second / 100 })
        #expect(results.allSatisfy { $0 == .allow })
    }

    @Test("more than 20 refusals within 5 s closes; refusals spread out do not")
    func abuse() {
        var limiter = CommandRateLimiter(rate: 1, burst: 1, now: 0)
        let results = Self.decisions(&limiter, at: Array(repeating: 0, count: 22))
        #expect(results.first == .allow)
        #expect(results.dropFirst().prefix(20).allSatisfy { $0 == .refuse })
        #expect(results.last == .close)

        var patient = CommandRateLimiter(rate: 1, burst: 1, now: 0)
        // Two commands per second for a minute: one refused each second, ~10 in any 5 s window.
        let spread = Self.decisions(&patient, at: (0..<120).map { UInt64($0) * Self.second / 2 })
        #expect(spread.contains(.refuse))
        #expect(!spread.contains(.close))
    }

    @Test("nonsense settings fall back to sane ones")
    func sanitised() {
        let limiter = CommandRateLimiter(rate: .infinity, burst: -5, now: 0)
        #expect(limiter.rate == 100)
        #expect(limiter.burst == 100)
    }
}
