import SwitchboardCore
import Testing

@Suite("RecoveryPlan")
struct RecoveryPlanTests {
    let top = StreamPosition(offset: 10, epoch: "e")

    @Test("no since: position is the top, buffered newer ones follow")
    func fresh() {
        let plan = RecoveryPlan(since: nil, top: top, historyOffsets: [], bufferedOffsets: [9, 10, 11, 12])
        #expect(plan.recovered == nil)
        #expect(plan.replayed.isEmpty)
        #expect(plan.following == [11, 12])
        #expect(plan.position == top)
    }

    @Test("all missed publications present: recovered, then buffered without duplicates")
    func recovered() {
        let plan = RecoveryPlan(since: StreamPosition(offset: 7, epoch: "e"), top: top, historyOffsets: [8, 9, 10], bufferedOffsets: [10, 11])
        #expect(plan.recovered == true)
        #expect(plan.replayed == [8, 9, 10])
        #expect(plan.following == [11])
    }

    @Test("nothing missed is a recovery too")
    func upToDate() {
        let plan = RecoveryPlan(since: StreamPosition(offset: 10, epoch: "e"), top: top, historyOffsets: [], bufferedOffsets: [])
        #expect(plan.recovered == true)
        #expect(plan.replayed.isEmpty)
    }

    @Test("trimmed history, wrong epoch or a position from the future: not recovered, never partial", arguments: [
        (StreamPosition(offset: 5, epoch: "e"), [8, 9, 10] as [UInt64]),
        (StreamPosition(offset: 7, epoch: "other"), [8, 9, 10]),
        (StreamPosition(offset: 12, epoch: "e"), []),
        (StreamPosition(offset: 7, epoch: "e"), [8, 10]),
    ])
    func notRecovered(_ since: StreamPosition, _ history: [UInt64]) {
        let plan = RecoveryPlan(since: since, top: top, historyOffsets: history, bufferedOffsets: [11])
        #expect(plan.recovered == false)
        #expect(plan.replayed.isEmpty)
        #expect(plan.position == top)
        #expect(plan.following == [11])
    }
}
