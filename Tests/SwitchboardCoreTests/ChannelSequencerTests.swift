import SwitchboardCore
import Testing

@Suite("ChannelSequencer")
struct ChannelSequencerTests {
    static let e = "e1"

    @Test("in-order publications are delivered; repeats and older ones are ignored")
    func inOrder() {
        var sequencer = ChannelSequencer(lastLive: StreamPosition(offset: 5, epoch: Self.e))
        #expect(sequencer.receive(offset: 6, epoch: Self.e) == .deliver)
        #expect(sequencer.receive(offset: 7, epoch: Self.e) == .deliver)
        #expect(sequencer.receive(offset: 7, epoch: Self.e) == .ignore)
        #expect(sequencer.receive(offset: 3, epoch: Self.e) == .ignore)
        #expect(sequencer.lastLive == StreamPosition(offset: 7, epoch: Self.e))
    }

    @Test("without a baseline the first publication is delivered and becomes it")
    func noBaseline() {
        var sequencer = ChannelSequencer()
        #expect(sequencer.receive(offset: 40, epoch: Self.e) == .deliver)
        #expect(sequencer.lastLive == StreamPosition(offset: 40, epoch: Self.e))
        sequencer.adoptBaseline(StreamPosition(offset: 1, epoch: Self.e))
        #expect(sequencer.lastLive?.offset == 40, "a baseline is adopted only when there is none")
    }

    @Test("a gap asks for a refill from the last delivered; everything after waits until it is done")
    func gap() {
        var sequencer = ChannelSequencer(lastLive: StreamPosition(offset: 5, epoch: Self.e))
        #expect(sequencer.receive(offset: 8, epoch: Self.e) == .refill(from: StreamPosition(offset: 5, epoch: Self.e)))
        #expect(sequencer.isRefilling)
        #expect(sequencer.receive(offset: 9, epoch: Self.e) == .hold)
        #expect(sequencer.receive(offset: 6, epoch: Self.e) == .hold)
        sequencer.finishRefill(baseline: StreamPosition(offset: 5, epoch: Self.e), recovered: true)
        #expect(!sequencer.isRefilling)
        // The hub feeds the missed ones, then the held ones: the seam has no gap and no duplicate.
        #expect(sequencer.receive(offset: 6, epoch: Self.e) == .deliver)
        #expect(sequencer.receive(offset: 7, epoch: Self.e) == .deliver)
        #expect(sequencer.receive(offset: 8, epoch: Self.e) == .deliver)
        #expect(sequencer.receive(offset: 6, epoch: Self.e) == .ignore)
        #expect(sequencer.receive(offset: 9, epoch: Self.e) == .deliver)
    }

    @Test("a refill that cannot recover drops the baseline: the next publication starts again")
    func refillLost() {
        var sequencer = ChannelSequencer(lastLive: StreamPosition(offset: 5, epoch: Self.e))
        _ = sequencer.receive(offset: 9, epoch: Self.e)
        sequencer.finishRefill(baseline: StreamPosition(offset: 5, epoch: Self.e), recovered: false)
        #expect(sequencer.lastLive == nil)
        #expect(sequencer.receive(offset: 9, epoch: Self.e) == .deliver)
        #expect(sequencer.receive(offset: 10, epoch: Self.e) == .deliver)
    }

    @Test("an epoch change resyncs and becomes the new baseline")
    func epochChange() {
        var sequencer = ChannelSequencer(lastLive: StreamPosition(offset: 5, epoch: Self.e))
        #expect(sequencer.receive(offset: 1, epoch: "e2") == .resync)
        #expect(sequencer.lastLive == StreamPosition(offset: 1, epoch: "e2"))
        #expect(sequencer.receive(offset: 2, epoch: "e2") == .deliver)
        #expect(sequencer.receive(offset: 6, epoch: Self.e) == .resync)
    }

    @Test("a refill started from outside holds live publications too; reset forgets everything")
    func externalRefill() {
        var sequencer = ChannelSequencer(lastLive: StreamPosition(offset: 5, epoch: Self.e))
        sequencer.beginRefill()
        #expect(sequencer.receive(offset: 6, epoch: Self.e) == .hold)
        sequencer.reset()
        #expect(!sequencer.isRefilling)
        #expect(sequencer.lastLive == nil)
    }

    @Test("offsets at the top of the range do not overflow")
    func topOfRange() {
        let top = UInt64(Int64.max)
        var sequencer = ChannelSequencer(lastLive: StreamPosition(offset: top - 1, epoch: Self.e))
        #expect(sequencer.receive(offset: top, epoch: Self.e) == .deliver)
        #expect(sequencer.receive(offset: top, epoch: Self.e) == .ignore)
    }

    @Test("the last offset again with another publishing time: the broker reused it (lost publications); a repeat of the same one, or one whose time is unknown, is ignored")
    func reusedOffset() {
        var sequencer = ChannelSequencer(lastLive: StreamPosition(offset: 3, epoch: Self.e))
        #expect(sequencer.receive(offset: 4, epoch: Self.e, time: 400) == .deliver)
        #expect(sequencer.receive(offset: 5, epoch: Self.e, time: 500) == .deliver)
        #expect(sequencer.receive(offset: 5, epoch: Self.e, time: 500) == .ignore, "a repeat")
        #expect(sequencer.receive(offset: 5, epoch: Self.e, time: 0) == .ignore, "time unknown")
        #expect(sequencer.receive(offset: 4, epoch: Self.e, time: 999) == .ignore, "older offsets cannot be told apart")
        #expect(sequencer.receive(offset: 5, epoch: Self.e, time: 777) == .reused)
        #expect(sequencer.lastLive == nil, "the next publication becomes the baseline")
        #expect(sequencer.receive(offset: 6, epoch: "e2", time: 800) == .deliver)

        // A baseline read from history has no time: a later repeat of it cannot be judged.
        var fromHistory = ChannelSequencer()
        fromHistory.adoptBaseline(StreamPosition(offset: 9, epoch: Self.e))
        #expect(fromHistory.receive(offset: 9, epoch: Self.e, time: 123) == .ignore)
        fromHistory.beginRefill()
        fromHistory.finishRefill(baseline: StreamPosition(offset: 9, epoch: Self.e), recovered: true)
        #expect(fromHistory.lastLiveTime == 0)
        #expect(fromHistory.receive(offset: 10, epoch: Self.e, time: 1000) == .deliver)
        #expect(fromHistory.lastLiveTime == 1000)
    }
}
