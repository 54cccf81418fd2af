import SwitchboardCore
import Testing

@Suite("ByteRateBudget")
struct ByteRateBudgetTests {
    static let second: UInt64 = 1_000_000_000

    func reserve(_ budget: inout ByteRateBudget, _ count: Int, now: UInt64) -> Bool {
        budget.reserve(count, now: now)
    }

    @Test("reads sent together each reserve their room: as many start as the burst holds rooms, the next is refused")
    func reservationsBoundReadsInFlight() {
        var budget = ByteRateBudget(rate: 1_000, burst: 4_000, now: 0)
        let started = (0..<10).map { _ in budget.reserve(1_000, now: 0) }
        #expect(started == [true, true, true, true, false, false, false, false, false, false])
    }

    @Test("what a read did not use is given back: small reads do not use up the budget")
    func settleGivesBackTheUnused() {
        var budget = ByteRateBudget(rate: 1_000, burst: 4_000, now: 0)
        for _ in 0..<1_000 {
            #expect(reserve(&budget, 1_000, now: 0))
            budget.settle(reserved: 1_000, used: 3, now: 0)
        }
        // 3,000 bytes used of 4,000: one more room fits, the next does not.
        #expect(reserve(&budget, 1_000, now: 0))
        #expect(!reserve(&budget, 1_000, now: 0))
    }

    @Test("a read may take the bucket below zero; the whole debt is refilled at the rate before the next read")
    func debtIsRefilled() {
        var budget = ByteRateBudget(rate: 1_000, burst: 4_000, now: 0)
        #expect(reserve(&budget, 100_000, now: 0))
        // 96,000 bytes of debt: 96 s of refill at 1,000/s (plus one byte).
        #expect(!reserve(&budget, 1, now: 96 * Self.second))
        #expect(reserve(&budget, 1, now: 96 * Self.second + Self.second / 100))
    }

    @Test("a reservation larger than the burst is settled exactly: what it read is what it costs")
    func largeReservationSettlesExactly() {
        var budget = ByteRateBudget(rate: 1, burst: 250_000, now: 0)
        var reads = 0
        while reserve(&budget, 1_048_576, now: 0), reads < 100 {
            budget.settle(reserved: 1_048_576, used: 100_000, now: 0)
            reads += 1
        }
        // 250,000 bytes allow three reads of 100,000 (the third takes it to -50,000).
        #expect(reads == 3)
    }

    @Test("a read charged only once done (nothing reserved) spends the bucket like any other")
    func chargeAfterTheRead() {
        var budget = ByteRateBudget(rate: 1, burst: 1_000, now: 0)
        budget.settle(reserved: 0, used: 1_500, now: 0)
        #expect(!reserve(&budget, 0, now: 0))
    }

    @Test("refill never goes above the burst, and time going backwards refills nothing")
    func refillIsBounded() {
        var budget = ByteRateBudget(rate: 1_000, burst: 2_000, now: 10 * Self.second)
        #expect(reserve(&budget, 2_000, now: 3_600 * Self.second))
        #expect(!reserve(&budget, 1, now: 3_600 * Self.second))
        #expect(!reserve(&budget, 1, now: 0))
    }

    @Test("hostile settings fall back to sane ones")
    func hostileSettings() {
        let budget = ByteRateBudget(rate: .nan, burst: -.infinity, now: 0)
        #expect(budget.rate == 1)
        #expect(budget.burst == 1)
        var huge = ByteRateBudget(rate: 1, burst: 1, now: 0)
        huge.settle(reserved: .max, used: .min, now: .max)
        #expect(reserve(&huge, .max, now: .max))
    }
}
