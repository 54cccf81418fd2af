import SwitchboardCore
import Testing

@Suite("ByteBudgetTable")
struct ByteBudgetTableTests {
    static let second: UInt64 = 1_000_000_000

    func reserve(_ table: inout ByteBudgetTable, _ bytes: Int, _ key: String, now: UInt64) -> Bool {
        table.reserve(bytes, for: key, now: now)
    }

    @Test("each key has its own budget")
    func keysAreSeparate() {
        var table = ByteBudgetTable(rate: 1, burst: 100)
        #expect(reserve(&table, 100, "a", now: 0))
        #expect(!reserve(&table, 1, "a", now: 0))
        #expect(reserve(&table, 100, "b", now: 0))
        table.settle(reserved: 100, used: 0, for: "a", now: 0)
        #expect(reserve(&table, 1, "a", now: 0))
    }

    @Test("a charge for a key never seen (a recovery, charged once done) makes its entry; a question about a key never seen does not")
    func chargeMakesTheEntry() {
        var table = ByteBudgetTable(rate: 1, burst: 100)
        let fresh = table.allowsRead(for: "a", now: 0)
        #expect(fresh)
        #expect(table.count == 0)
        table.settle(reserved: 0, used: 150, for: "a", now: 0)
        #expect(table.count == 1)
        let spent = !table.allowsRead(for: "a", now: 0)
        #expect(spent)
        // Giving back to a key not there makes nothing.
        table.settle(reserved: 10, used: 0, for: "b", now: 0)
        #expect(table.count == 1)
    }

    @Test("the table is bounded: refilled keys are forgotten when it is full; a new key that finds it full of active keys is let through untracked")
    func bounded() {
        var table = ByteBudgetTable(rate: 10, burst: 100, maximumKeys: 3)
        for key in ["a", "b", "c"] { #expect(reserve(&table, 100, key, now: 0)) }
        #expect(table.count == 3)
        // Full of spent keys: "d" goes through, untracked, as often as it asks.
        #expect(reserve(&table, 100, "d", now: 0))
        #expect(reserve(&table, 100, "d", now: 0))
        #expect(table.count == 3)
        #expect(table.untracked == 2)
        // 10 s later every bucket is full again: the sweep forgets them and "d" is tracked.
        #expect(reserve(&table, 100, "d", now: 10 * Self.second))
        #expect(table.count == 1)
        #expect(!reserve(&table, 1, "d", now: 10 * Self.second))
    }

    @Test("a key spent keeps its debt: it is not forgotten before its bucket refills")
    func spentKeysAreKept() {
        var table = ByteBudgetTable(rate: 10, burst: 100, maximumKeys: 2)
        #expect(reserve(&table, 100, "a", now: 0))
        #expect(reserve(&table, 50, "b", now: 0))
        // 5 s: "b" is full again, "a" only half: "c" takes "b"'s place, "a" stays spent.
        #expect(reserve(&table, 100, "c", now: 5 * Self.second))
        #expect(table.count == 2)
        // "a" has 50 bytes, not a fresh 100.
        #expect(reserve(&table, 50, "a", now: 5 * Self.second))
        #expect(!reserve(&table, 1, "a", now: 5 * Self.second))
    }
}
