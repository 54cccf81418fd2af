import Dispatch
import NIOCore
import NIOPosix
@testable import SwitchboardBroker
import SwitchboardBrokerTesting
import SwitchboardCore
import Testing

@Suite("MemoryBroker conformance")
struct MemoryBrokerConformanceTests {
    @Test(arguments: BrokerConformance.cases)
    func conformance(_ check: BrokerConformance.Case) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        try await check.run(
            using: { limits in MemoryBroker(eventLoop: group.next(), limits: limits) },
            footprint: { broker in "\(try await (broker as! MemoryBroker).footprint().get())" }
        )
        try await group.shutdownGracefully()
    }
}

@Suite("MemoryBroker specifics")
struct MemoryBrokerTests {
    final class Clock: @unchecked Sendable {
        var now: Double = 1_000_000
    }

    @Test("channel meta expires after metaTTL: a new epoch and offsets restart")
    func metaExpiry() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let clock = Clock()
        let broker = MemoryBroker(eventLoop: loop, metaTTL: 100, clock: { clock.now })
        let request = PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 10)
        let first = try await broker.publish(request).get()
        try await loop.submit { clock.now += 101 }.get()
        let second = try await broker.publish(request).get()
        #expect(second.position.offset == 1)
        #expect(second.position.epoch != first.position.epoch)
        try await group.shutdownGracefully()
    }

    @Test("past maximumChannelRecords the channels published to longest ago are forgotten, unsubscribed ones first")
    func channelRecordsAreCapped() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let clock = Clock()
        let broker = MemoryBroker(eventLoop: loop, limits: BrokerLimits(maximumChannelRecords: 100), clock: { clock.now })
        try await broker.start { _ in }.get()
        try await broker.subscribe(channel: "watched").get()
        try await broker.subscribe(channel: "quiet").get()
        let quiet = try await broker.history(HistoryQuery(channel: "quiet", limit: 0)).get().position
        func publish(_ channel: String) async throws -> PublishResult {
            try await loop.submit { clock.now += 1 }.get()
            return try await broker.publish(
                PublishRequest(channel: channel, data: ByteBuffer(string: "x"), historySize: 10, historyTTL: 100_000)
            ).get()
        }
        let watched = try await publish("watched")  // the oldest of all, but followed on this node
        var first: PublishResult?
        for index in 0..<1_000 {
            let result = try await publish("c\(index)")
            if index == 0 { first = result }
        }
        let footprint = try await broker.footprint().get()
        #expect(footprint.channels <= 100)
        // The newest ones keep their history; the oldest unwatched ones were forgotten.
        #expect(try await broker.history(HistoryQuery(channel: "c999", limit: -1)).get().publications.count == 1)
        #expect(try await broker.history(HistoryQuery(channel: "c0", limit: -1)).get().publications.isEmpty)
        // A quiet subscribed channel (no record) keeps the epoch its subscriber saw across the passes
        // that forgot other channels, and its first publication comes in it.
        #expect(try await broker.history(HistoryQuery(channel: "quiet", limit: 0)).get().position == quiet)
        #expect(try await publish("quiet").position == StreamPosition(offset: 1, epoch: quiet.epoch))
        let again = try await publish("watched")
        #expect(again.position.epoch == watched.position.epoch && again.position.offset == 2)
        // A forgotten channel starts a new epoch: a client recovering from the old one is told it missed some.
        let restarted = try await publish("c0")
        #expect(restarted.position.offset == 1)
        #expect(restarted.position.epoch != first?.position.epoch, "the same epoch with offsets restarted would hide the loss")
        try await broker.shutdown().get()
        try await group.shutdownGracefully()
    }

    @Test("past maximumHistoryBytes the histories of the channels published to longest ago are dropped, unsubscribed ones first; their positions stay")
    func historyBytesAreCapped() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let clock = Clock()
        let broker = MemoryBroker(eventLoop: loop, limits: BrokerLimits(maximumHistoryBytes: 100_000), clock: { clock.now })
        try await broker.start { _ in }.get()
        try await broker.subscribe(channel: "watched").get()
        let kilobyte = ByteBuffer(string: "\"" + String(repeating: "x", count: 1_022) + "\"")
        func publish(_ channel: String) async throws {
            try await loop.submit { clock.now += 1 }.get()
            _ = try await broker.publish(PublishRequest(channel: channel, data: kilobyte, historySize: 100, historyTTL: 100_000)).get()
        }
        try await publish("watched")  // the oldest of all, but followed on this node
        let channels = (0..<30).map { "c\($0)" }
        for channel in channels {
            for _ in 0..<10 { try await publish(channel) }
        }
        var stored = 0
        for channel in channels + ["watched"] {
            let history = try await broker.history(HistoryQuery(channel: channel, limit: -1)).get()
            stored += history.publications.reduce(0) { $0 + $1.data.readableBytes }
        }
        #expect(stored <= 100_000)
        #expect(stored >= 80_000)  // dropped down to nine tenths, not emptied
        // The newest keep their history, the oldest unwatched ones lost it but not their position.
        #expect(try await broker.history(HistoryQuery(channel: "c29", limit: -1)).get().publications.count == 10)
        let oldest = try await broker.history(HistoryQuery(channel: "c0", sinceOffset: 5, limit: -1)).get()
        #expect(oldest.publications.isEmpty && oldest.position.offset == 10)
        #expect(try await broker.history(HistoryQuery(channel: "watched", limit: -1)).get().publications.count == 1)
        try await group.shutdownGracefully()
    }

    @Test("the history budget counts what a stored publication takes beside its data: a flood of 1-byte publications is bounded too")
    func historyBudgetCountsEntries() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let clock = Clock()
        let broker = MemoryBroker(eventLoop: loop, limits: BrokerLimits(maximumHistoryBytes: 20_000), clock: { clock.now })
        try await broker.start { _ in }.get()
        let channels = (0..<100).map { "tiny\($0)" }
        for channel in channels {
            for _ in 0..<5 {
                try await loop.submit { clock.now += 1 }.get()
                _ = try await broker.publish(PublishRequest(channel: channel, data: ByteBuffer(string: "1"), historySize: 100, historyTTL: 100_000)).get()
            }
        }
        var stored = 0
        for channel in channels {
            stored += try await broker.history(HistoryQuery(channel: channel, limit: -1)).get().publications.count
        }
        // 500 publications of 1 byte: 500 bytes of data, but about 97 bytes each in memory.
        #expect(stored * (1 + PublicationRing.entryOverhead) <= 20_000, "\(stored) stored")
        #expect(stored >= 150)
        try await group.shutdownGracefully()
    }

    @Test("the records to forget are the oldest, picked without sorting the table")
    func oldestRecords() {
        var generator = SystemRandomNumberGenerator()
        for size in [1, 2, 10, 1_000, 5_000] {
            let records = (0..<size).map { (name: "c\($0)", lastPublish: Double(Int.random(in: 0..<(size / 3 + 1), using: &generator))) }
            let sorted = records.sorted { $0.lastPublish < $1.lastPublish }
            for count in Set([0, 1, size / 2, size - 1, size, size + 5]) {
                let picked = ChannelEviction.oldest(count, of: records)
                #expect(picked.count == min(count, size))
                #expect(Set(picked).count == picked.count)
                guard count > 0, count < size else { continue }
                // Every record left is at least as recent as every record picked.
                let pickedTimes = Set(picked).map { name in records.first { $0.name == name }!.lastPublish }
                #expect(pickedTimes.max()! <= sorted[count].lastPublish)
            }
        }
        // All records at one instant, or at infinities, still give the count asked for.
        #expect(ChannelEviction.oldest(3, of: (0..<10).map { ("c\($0)", 5.0) }).count == 3)
        #expect(ChannelEviction.oldest(2, of: [("a", -.infinity), ("b", .infinity), ("c", 0), ("d", .nan)]).count == 2)
    }

    @Test("publishNow publishes on the channel's loop as publish does, in one offset sequence, and refuses elsewhere")
    func publishNow() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let broker = MemoryBroker(eventLoop: loop)
        final class Delivered: @unchecked Sendable { var offsets: [UInt64] = [] }  // touched on `loop` only
        let delivered = Delivered()
        try await broker.start { event in
            if case .publication(_, let publication, _) = event { delivered.offsets.append(publication.offset) }
        }.get()
        try await broker.subscribe(channel: "c").get()
        let request = PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 1000)
        // Off the channel's loop there is no answer without a hop: the caller must use `publish`.
        #expect(broker.publishNow(request) == nil)
        let first = try await broker.publish(request).get()
        let now = try await loop.submit { try broker.publishNow(request)?.get() }.get()
        let third = try await broker.publish(request).get()
        #expect(first.position.offset == 1)
        #expect(now?.position == StreamPosition(offset: 2, epoch: first.position.epoch))
        #expect(third.position.offset == 3)
        #expect(try await loop.submit { delivered.offsets }.get() == [1, 2, 3])
        let stored = try await broker.history(HistoryQuery(channel: "c", sinceOffset: 0, limit: -1, reverse: false)).get()
        #expect(stored.publications.map(\.offset) == [1, 2, 3])
        // A refusal comes back as a failure, as `publish`'s would.
        var overLong = request
        overLong.idempotencyKey = String(repeating: "k", count: broker.limits.maximumIdempotencyKeyBytes + 1)
        let tooLong = overLong
        let refused = try await loop.submit { broker.publishNow(tooLong) }.get()
        guard case .failure = refused else {
            Issue.record("an over-long idempotency key was not refused: \(String(describing: refused))")
            return
        }
        try await group.shutdownGracefully()
    }

    @Test("idempotency keys expire after their window")
    func idempotencyWindow() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let clock = Clock()
        let broker = MemoryBroker(eventLoop: loop, clock: { clock.now })
        var request = PublishRequest(channel: "c", data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 1000, idempotencyKey: "k")
        request.idempotencyWindow = 5
        let first = try await broker.publish(request).get()
        let repeatWithin = try await broker.publish(request).get()
        try await loop.submit { clock.now += 6 }.get()
        let repeatAfter = try await broker.publish(request).get()
        #expect(repeatWithin.duplicate && repeatWithin.position == first.position)
        #expect(!repeatAfter.duplicate && repeatAfter.position.offset == 2)
        try await group.shutdownGracefully()
    }
}

@Suite("MemoryBroker bounds")
struct MemoryBrokerBoundsTests {
    final class Clock: @unchecked Sendable {
        var now: Double = 1_000_000
    }

    @Test("a publish into a full 10,000-entry history neither copies nor reallocates it")
    func publishDoesNotCopyHistory() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let broker = MemoryBroker(eventLoop: group.next())
        @Sendable func request(_ channel: String, size: Int) -> PublishRequest {
            PublishRequest(channel: channel, data: ByteBuffer(string: "x"), historySize: size, historyTTL: 3600)
        }
        for _ in 0..<10_000 { _ = try await broker.publish(request("big", size: 10_000)).get() }
        let full = try #require(try await broker.historyStorage(channel: "big").get())
        for _ in 0..<200 {
            _ = try await broker.publish(request("big", size: 10_000)).get()
            // Every publish: the same storage, the same capacity (no copy-on-write, no growth).
            #expect(try await broker.historyStorage(channel: "big").get() == full)
        }
        let history = try await broker.history(HistoryQuery(channel: "big", limit: 2, reverse: true)).get()
        #expect(history.publications.map(\.offset) == [10_200, 10_199])
        #expect(history.position.offset == 10_200)

        try await broker.shutdown().get()
        try await group.shutdownGracefully()
    }

    @Test("the sweep leaves nothing of a channel once its history, keys and presence are gone")
    func sweepDropsEverything() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let clock = Clock()
        let broker = MemoryBroker(eventLoop: loop, metaTTL: 100, clock: { clock.now })
        let empty = try await broker.footprint().get()
        // History, an idempotency key on a channel without history, presence.
        _ = try await broker.publish(PublishRequest(channel: "h", data: ByteBuffer(string: "1"), historySize: 10, historyTTL: 10)).get()
        var keyed = PublishRequest(channel: "k", data: ByteBuffer(string: "1"), historySize: 0, historyTTL: 0, idempotencyKey: "key")
        keyed.idempotencyWindow = 50
        _ = try await broker.publish(keyed).get()
        try await broker.addPresence(channel: "p", info: ClientInfo(client: "c", user: "u"), ttl: 30).get()
        let busy = try await broker.footprint().get()
        #expect(busy.channels == 2 && busy.publications == 1 && busy.idempotencyKeys == 1 && busy.presenceEntries == 1)

        try await loop.submit { clock.now += 60 }.get()
        try await broker.sweepNow().get()
        let later = try await broker.footprint().get()
        // Publication expired (10 s), key expired (50 s), presence expired (30 s); the channel's
        // position is kept for its meta TTL (100 s) so that an epoch is not reused early.
        #expect(later.publications == 0 && later.idempotencyKeys == 0 && later.presenceEntries == 0 && later.channels == 1)

        try await loop.submit { clock.now += 50 }.get()
        try await broker.sweepNow().get()
        #expect(try await broker.footprint().get() == empty)
        try await broker.shutdown().get()
        try await group.shutdownGracefully()
    }

    @Test("idempotency keys per channel are capped; the newest still deduplicate")
    func idempotencyKeysCapped() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let broker = MemoryBroker(eventLoop: group.next(), limits: BrokerLimits(maximumIdempotencyKeysPerChannel: 100))
        func request(_ key: String) -> PublishRequest {
            PublishRequest(channel: "c", data: ByteBuffer(string: "x"), historySize: 10, historyTTL: 60, idempotencyKey: key)
        }
        for i in 0..<1_000 { _ = try await broker.publish(request("k\(i)")).get() }
        #expect(try await broker.footprint().get().idempotencyKeys == 100)
        let newest = try await broker.publish(request("k999")).get()
        #expect(newest.duplicate && newest.position.offset == 1_000)
        let oldest = try await broker.publish(request("k0")).get()
        #expect(!oldest.duplicate)
        try await broker.shutdown().get()
        try await group.shutdownGracefully()
    }
}
