import NIOCore
public import SwitchboardCore
public import SwitchboardBroker
import NIOConcurrencyHelpers

/// The contract every `Broker` must keep, as runnable checks.
///
/// Each case gets a fresh broker from the caller's factory and throws
/// `BrokerConformance.Failure` when the broker breaks the contract. Test
/// targets wrap the cases in their own test framework:
///
/// ```swift
/// @Test(arguments: BrokerConformance.cases)
/// func conformance(_ check: BrokerConformance.Case) async throws {
///     try await check.run(using: { MemoryBroker(eventLoop: loop) })
/// }
/// ```
///
/// About 530 lines: the contract as one list of cases, so that a broker's author
/// reads everything it must keep in one place.
public enum BrokerConformance {
    /// A broken promise of the contract.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// What a check may ask of the implementation beyond the `Broker` protocol.
    public struct Environment: Sendable {
        /// A description of everything the broker stores (the memory broker's table sizes, the
        /// Redis key count): equal before and after work that must leave nothing behind.
        public var footprint: @Sendable () async throws -> String

        public init(footprint: @escaping @Sendable () async throws -> String) {
            self.footprint = footprint
        }
    }

    /// One named check.
    public struct Case: Sendable, CustomStringConvertible {
        public let name: String
        /// The limits the broker under test must be made with.
        public let limits: BrokerLimits
        let body: @Sendable (any Broker, EventRecorder, Environment) async throws -> Void
        public var description: String { self.name }

        init(name: String, limits: BrokerLimits = BrokerLimits(), body: @escaping @Sendable (any Broker, EventRecorder) async throws -> Void) {
            self.name = name
            self.limits = limits
            self.body = { broker, recorder, _ in try await body(broker, recorder) }
        }

        init(
            name: String, limits: BrokerLimits = BrokerLimits(),
            body: @escaping @Sendable (any Broker, EventRecorder, Environment) async throws -> Void
        ) {
            self.name = name
            self.limits = limits
            self.body = body
        }

        /// Runs the check on a new broker from `makeBroker` (made with `limits`), and shuts it down afterwards.
        /// `footprint` describes what the broker stores (see `Environment`); it is created for the broker.
        public func run(
            using makeBroker: (BrokerLimits) async throws -> any Broker,
            footprint: @escaping @Sendable (any Broker) async throws -> String
        ) async throws {
            let broker = try await makeBroker(self.limits)
            let recorder = EventRecorder()
            try await broker.start(eventHandler: { event in recorder.record(event) }).get()
            do {
                try await self.body(broker, recorder, Environment(footprint: { try await footprint(broker) }))
            } catch {
                _ = try? await broker.shutdown().get()
                throw error
            }
            try await broker.shutdown().get()
        }
    }

    /// Collects delivered events, thread-safely.
    public final class EventRecorder: Sendable {
        private let events = NIOLockedValueBox<[BrokerEvent]>([])

        public init() {}

        public func record(_ event: BrokerEvent) {
            self.events.withLockedValue { $0.append(event) }
        }

        public var all: [BrokerEvent] { self.events.withLockedValue { $0 } }

        /// Publications delivered for `channel`, in delivery order.
        public func publications(in channel: String) -> [(Publication, String)] {
            self.all.compactMap {
                if case .publication(channel, let publication, let epoch) = $0 { return (publication, epoch) }
                return nil
            }
        }

        /// Waits until `condition` holds (polling), at most `seconds`.
        public func wait(seconds: Double = 5, until condition: @Sendable (EventRecorder) -> Bool) async throws {
            let deadline = NIODeadline.now() + .milliseconds(Int64(seconds * 1000))
            while !condition(self) {
                guard NIODeadline.now() < deadline else { throw Failure("timed out waiting for broker events") }
                try await Task.sleep(nanoseconds: 10_000_000)
            }
        }
    }

    static func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw Failure(message()) }
    }

    static func data(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    static func request(_ channel: String, _ text: String, size: Int = 10, ttl: Double = 60, key: String? = nil) -> PublishRequest {
        PublishRequest(channel: channel, data: data(text), historySize: size, historyTTL: ttl, idempotencyKey: key)
    }

    static func unique(_ base: String) -> String {
        "\(base):\(UInt64.random(in: 0...UInt64.max))"
    }

    /// Every check, in a stable order.
    public static let cases: [Case] = [
        Case(name: "offsets up to UInt64.max, limits and TTLs of any size never trap") { broker, _ in
            let channel = unique("conf")
            for i in 1...3 { _ = try await broker.publish(request(channel, "\(i)")).get() }
            let huge: [UInt64] = [3, UInt64(Int64.max) - 1, UInt64(Int64.max), UInt64(Int64.max) + 1, UInt64.max - 1, UInt64.max]
            for since in huge {
                for reverse in [false, true] {
                    for limit in [-1, 0, 1, Int.max] {
                        let read = try await broker.history(HistoryQuery(channel: channel, sinceOffset: since, limit: limit, reverse: reverse)).get()
                        try expect(read.publications.isEmpty, "since \(since) read \(read.publications.map(\.offset))")
                        try expect(read.position.offset == 3, "since \(since): position \(read.position)")
                    }
                }
            }
            let unknown = try await broker.history(HistoryQuery(channel: unique("conf"), sinceOffset: .max, limit: .max)).get()
            try expect(unknown.publications.isEmpty && unknown.position.offset == 0, "unknown channel since UInt64.max")
            let all = try await broker.history(HistoryQuery(channel: channel, sinceOffset: 0, limit: .max, reverse: true)).get()
            try expect(all.publications.map(\.offset) == [3, 2, 1], "limit Int.max reversed: \(all.publications.map(\.offset))")
            // Sizes and windows at the edges of what a configuration or a client could send.
            for ttl in [Double.infinity, 1e300, Double.nan, -1, 0] {
                var odd = request(unique("conf"), "x", size: Int.max, ttl: ttl, key: "k")
                odd.idempotencyWindow = ttl
                _ = try await broker.publish(odd).get()
                try await broker.addPresence(channel: channel, info: ClientInfo(client: "c", user: "u"), ttl: ttl).get()
            }
            try await broker.announce(NodeInfo(id: unique("node"), name: "n", address: "a"), ttl: 1e300).get()
        },
        Case(name: "a history read bounded in bytes returns the oldest publications that fit and says it stopped short") { broker, _ in
            let channel = unique("conf")
            let payload = "\"" + String(repeating: "x", count: 398) + "\""  // 400 bytes: 496 with the envelope
            for _ in 1...6 { _ = try await broker.publish(request(channel, payload)).get() }
            let three = try await broker.history(HistoryQuery(channel: channel, sinceOffset: 1, limit: -1, maximumBytes: 3 * 496 + 100)).get()
            try expect(three.publications.map(\.offset) == [2, 3, 4] && three.truncated, "bounded read: \(three.publications.map(\.offset)), truncated \(three.truncated)")
            try expect(three.position.offset == 6, "bounded read: position \(three.position)")
            let exact = try await broker.history(HistoryQuery(channel: channel, sinceOffset: 1, limit: -1, maximumBytes: 5 * 496)).get()
            try expect(exact.publications.map(\.offset) == [2, 3, 4, 5, 6] && !exact.truncated, "read that fits exactly: \(exact.publications.map(\.offset)), truncated \(exact.truncated)")
            let none = try await broker.history(HistoryQuery(channel: channel, sinceOffset: 0, limit: -1, maximumBytes: 495)).get()
            try expect(none.publications.isEmpty && none.truncated, "first one over: \(none.publications.map(\.offset)), truncated \(none.truncated)")
            let unbounded = try await broker.history(HistoryQuery(channel: channel, sinceOffset: 0, limit: -1)).get()
            try expect(unbounded.publications.count == 6 && !unbounded.truncated, "unbounded read: \(unbounded.publications.count)")
            // Longer histories (a store may read them in parts): every offset once, in order.
            let long = unique("conf")
            for i in 1...80 { _ = try await broker.publish(request(long, "\(i % 10)", size: 100)).get() }
            let each = HistoryQuery.bytes(ofData: 1)
            let all = try await broker.history(HistoryQuery(channel: long, sinceOffset: 3, limit: -1, maximumBytes: 1 << 30)).get()
            try expect(all.publications.map(\.offset) == Array(4...80) && !all.truncated, "bounded read of 77: \(all.publications.map(\.offset))")
            let cut = try await broker.history(HistoryQuery(channel: long, sinceOffset: 3, limit: -1, maximumBytes: 70 * each)).get()
            try expect(cut.publications.map(\.offset) == Array(4...73) && cut.truncated, "cut at 70: \(cut.publications.map(\.offset))")
            let newest = try await broker.history(HistoryQuery(channel: long, sinceOffset: 3, limit: -1, reverse: true, maximumBytes: 10 * each)).get()
            try expect(newest.publications.map(\.offset) == Array((71...80).reversed()) && newest.truncated, "reverse, cut at 10: \(newest.publications.map(\.offset))")
            let counted = try await broker.history(HistoryQuery(channel: long, sinceOffset: 3, limit: 45, maximumBytes: 1 << 30)).get()
            try expect(counted.publications.map(\.offset) == Array(4...48) && !counted.truncated, "limit 45: \(counted.publications.map(\.offset))")
            // Reverse reads across parts: bounded but all fitting, cut past a part, counted.
            let allNewest = try await broker.history(HistoryQuery(channel: long, sinceOffset: 3, limit: -1, reverse: true, maximumBytes: 1 << 30)).get()
            try expect(allNewest.publications.map(\.offset) == Array((4...80).reversed()) && !allNewest.truncated, "reverse of 77: \(allNewest.publications.map(\.offset))")
            let newestCut = try await broker.history(HistoryQuery(channel: long, sinceOffset: 3, limit: -1, reverse: true, maximumBytes: 50 * each)).get()
            try expect(newestCut.publications.map(\.offset) == Array((31...80).reversed()) && newestCut.truncated, "reverse, cut at 50: \(newestCut.publications.map(\.offset))")
            let newestCounted = try await broker.history(HistoryQuery(channel: long, limit: 70, reverse: true, maximumBytes: 1 << 30)).get()
            try expect(newestCounted.publications.map(\.offset) == Array((11...80).reversed()) && !newestCounted.truncated, "reverse, limit 70: \(newestCounted.publications.map(\.offset))")
        },
        Case(name: "an unknown channel reports, every time, the epoch its first publication gets") { broker, _ in
            let channel = unique("conf")
            let first = try await broker.history(HistoryQuery(channel: channel, limit: -1)).get()
            let second = try await broker.history(HistoryQuery(channel: channel, limit: 0)).get()
            try expect(first.position == second.position, "two reads: \(first.position) then \(second.position)")
            let published = try await broker.publish(request(channel, "1")).get()
            try expect(published.position == StreamPosition(offset: 1, epoch: first.position.epoch),
                "read \(first.position), first publication \(published.position)")
            let other = try await broker.history(HistoryQuery(channel: unique("conf"), limit: 0)).get()
            try expect(other.position.epoch != first.position.epoch, "two channels share an epoch")
        },
        Case(name: "10,000 reads of unknown channels store nothing") { broker, _, environment in
            let before = try await environment.footprint()
            let base = unique("ghost")
            for batch in 0..<50 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in 0..<50 {
                        let channel = "\(base):\(batch):\(i)"
                        group.addTask {
                            _ = try await broker.history(HistoryQuery(channel: channel, limit: -1)).get()
                            _ = try await broker.history(HistoryQuery(channel: channel, sinceOffset: .max, limit: 0)).get()
                            _ = try await broker.presence(channel: channel).get()
                            try await broker.removePresence(channel: channel, clients: ["c"]).get()
                        }
                    }
                    try await group.waitForAll()
                }
            }
            // Subscribing and unsubscribing leaves nothing either.
            for i in 0..<200 {
                try await broker.subscribe(channel: "\(base):s:\(i)").get()
                try await broker.unsubscribe(channel: "\(base):s:\(i)").get()
            }
            let after = try await environment.footprint()
            try expect(before == after, "reads stored something: \(before) before, \(after) after")
        },
        Case(name: "idempotency keys longer than the limit are refused, at the limit accepted") { broker, recorder in
            let channel = unique("conf")
            try await broker.subscribe(channel: channel).get()
            let atLimit = String(repeating: "k", count: 128)
            let first = try await broker.publish(request(channel, "a", key: atLimit)).get()
            let repeated = try await broker.publish(request(channel, "a", key: atLimit)).get()
            try expect(repeated.duplicate && repeated.position == first.position, "128-byte key not remembered")
            var refused = false
            do {
                _ = try await broker.publish(request(channel, "b", key: atLimit + "k")).get()
            } catch is BrokerError {
                refused = true
            }
            try expect(refused, "a 129-byte key was accepted")
            var long = false
            do {
                _ = try await broker.publish(request(channel, "c", key: String(repeating: "x", count: 60_000))).get()
            } catch is BrokerError {
                long = true
            }
            try expect(long, "a 60 KB key was accepted")
            try await recorder.wait { $0.publications(in: channel).count >= 1 }
            let after = try await broker.history(HistoryQuery(channel: channel, limit: -1)).get()
            try expect(after.publications.count == 1, "a refused publish was stored: \(after.publications.count)")
        },
        Case(name: "presence per channel is capped: past it new clients are not listed, present ones refreshed", limits: BrokerLimits(maximumPresencePerChannel: 5)) {
            broker, _ in
            let channel = unique("conf")
            let clients = (0..<8).map { ClientInfo(client: "p\($0)", user: "u") }
            try await broker.addPresence(channel: channel, clients: Array(clients[0..<3]), ttl: 60).get()
            try await broker.addPresence(channel: channel, clients: Array(clients[3..<8]), ttl: 60).get()
            var present = try await broker.presence(channel: channel).get()
            try expect(present.map(\.client) == ["p0", "p1", "p2", "p3", "p4"], "capped presence \(present.map(\.client))")
            try await broker.addPresence(channel: channel, clients: [clients[0]], ttl: 60).get()
            try await broker.removePresence(channel: channel, clients: ["p1"]).get()
            try await broker.addPresence(channel: channel, clients: [clients[7]], ttl: 60).get()
            present = try await broker.presence(channel: channel).get()
            try expect(present.map(\.client) == ["p0", "p2", "p3", "p4", "p7"], "after a leave: \(present.map(\.client))")
            // Several leaves in one call, one of them a client that is not present.
            try await broker.removePresence(channel: channel, clients: ["p2", "p9", "p4"]).get()
            present = try await broker.presence(channel: channel).get()
            try expect(present.map(\.client) == ["p0", "p3", "p7"], "after three leaves in one call: \(present.map(\.client))")
            try await broker.removePresence(channel: channel, clients: []).get()
            present = try await broker.presence(channel: channel).get()
            try expect(present.map(\.client) == ["p0", "p3", "p7"], "after no leave: \(present.map(\.client))")
            // Full again with two short-lived entries: a newcomer waits until they expire, then is listed.
            // (4 s: they must still be listed two round trips later on a loaded machine; 1 s was missed.)
            try await broker.addPresence(channel: channel, clients: [clients[5], clients[6]], ttl: 4).get()
            let newcomer = ClientInfo(client: "q", user: "u")
            try await broker.addPresence(channel: channel, clients: [newcomer], ttl: 60).get()
            present = try await broker.presence(channel: channel).get()
            try expect(present.map(\.client) == ["p0", "p3", "p5", "p6", "p7"], "full: \(present.map(\.client))")
            try await Task.sleep(nanoseconds: 4_300_000_000)
            try await broker.addPresence(channel: channel, clients: [newcomer], ttl: 60).get()
            present = try await broker.presence(channel: channel).get()
            try expect(present.map(\.client) == ["p0", "p3", "p7", "q"], "after two expired: \(present.map(\.client))")
        },
        Case(name: "offsets start at 1 and grow by one, with one epoch") { broker, _ in
            let channel = unique("conf")
            var epoch: String?
            for i in 1...5 {
                let result = try await broker.publish(request(channel, "\(i)")).get()
                try expect(result.position.offset == UInt64(i), "publish \(i) got offset \(result.position.offset)")
                try expect(!result.position.epoch.isEmpty, "empty epoch")
                if let epoch { try expect(epoch == result.position.epoch, "epoch changed between publishes") }
                epoch = result.position.epoch
            }
        },
        Case(name: "subscribers receive publications in offset order with their epoch") { broker, recorder in
            let channel = unique("conf")
            try await broker.subscribe(channel: channel).get()
            var epoch = ""
            for i in 1...20 { epoch = try await broker.publish(request(channel, "\(i)")).get().position.epoch }
            try await recorder.wait { $0.publications(in: channel).count == 20 }
            let delivered = recorder.publications(in: channel)
            try expect(delivered.map(\.0.offset) == Array(1...20), "delivered offsets \(delivered.map(\.0.offset))")
            try expect(delivered.allSatisfy { $0.1 == epoch }, "delivered epoch differs")
            try expect(delivered.map { String(buffer: $0.0.data) } == (1...20).map(String.init), "payloads changed")
        },
        Case(name: "data bytes come back unchanged from delivery and from history") { broker, recorder in
            // What the server hands over is the client's own JSON text (RawJSON): whitespace, escapes,
            // number spellings, member order and multi-byte UTF-8 must survive the broker byte for byte.
            let channel = unique("conf")
            try await broker.subscribe(channel: channel).get()
            let payloads = [
                #"{ "b" : 1 ,  "a" :[ 2 ,3 ],\#t"b":4 }"#, #""caf\u00e9 \ud83d\ude00 \/""#, "1e400", "12345678901234567890",
                #""é😀 ""#, " ",
            ]
            var info = ClientInfo(client: "c1", user: "u1")
            info.info = .object(JSONObject([("x", .number("1e400"))]))
            for (i, payload) in payloads.enumerated() {
                var req = request(channel, payload)
                if i % 2 == 0 { req.info = info }
                _ = try await broker.publish(req).get()
            }
            try await recorder.wait { $0.publications(in: channel).count == payloads.count }
            let delivered = recorder.publications(in: channel).map { Array($0.0.data.readableBytesView) }
            try expect(delivered == payloads.map { Array($0.utf8) }, "delivered payloads changed: \(delivered.map { String(decoding: $0, as: UTF8.self) })")
            let history = try await broker.history(HistoryQuery(channel: channel, sinceOffset: nil, limit: .max)).get().publications
            let stored = history.map { Array($0.data.readableBytesView) }
            try expect(stored == payloads.map { Array($0.utf8) }, "history payloads changed: \(stored.map { String(decoding: $0, as: UTF8.self) })")
        },
        Case(name: "publications carry the publisher's info") { broker, recorder in
            let channel = unique("conf")
            try await broker.subscribe(channel: channel).get()
            var req = request(channel, "{}")
            req.info = ClientInfo(client: "c1", user: "u1")
            _ = try await broker.publish(req).get()
            try await recorder.wait { $0.publications(in: channel).count == 1 }
            try expect(recorder.publications(in: channel)[0].0.info == ClientInfo(client: "c1", user: "u1"), "info lost")
        },
        Case(name: "no delivery after unsubscribe, none for other channels") { broker, recorder in
            let channel = unique("conf")
            let other = unique("conf")
            try await broker.subscribe(channel: channel).get()
            _ = try await broker.publish(request(channel, "1")).get()
            _ = try await broker.publish(request(other, "x")).get()
            try await recorder.wait { $0.publications(in: channel).count == 1 }
            try await broker.unsubscribe(channel: channel).get()
            _ = try await broker.publish(request(channel, "2")).get()
            // A publish on a subscribed channel afterwards proves the earlier one had its chance to arrive.
            let marker = unique("conf")
            try await broker.subscribe(channel: marker).get()
            _ = try await broker.publish(request(marker, "m")).get()
            try await recorder.wait { $0.publications(in: marker).count == 1 }
            try expect(recorder.publications(in: channel).count == 1, "delivered after unsubscribe")
            try expect(recorder.publications(in: other).isEmpty, "delivered an unsubscribed channel")
        },
        Case(name: "history is bounded by size, oldest first, with the current position") { broker, _ in
            let channel = unique("conf")
            for i in 1...15 { _ = try await broker.publish(request(channel, "\(i)", size: 10)).get() }
            let history = try await broker.history(HistoryQuery(channel: channel, limit: -1)).get()
            try expect(history.publications.map(\.offset) == (6...15).map { UInt64($0) }, "history must keep exactly the last 10")
            try expect(history.position.offset == 15, "top offset \(history.position.offset)")
            // Past several stream nodes (Redis trims whole nodes of about 100 entries), reads still see exactly the last 10.
            for i in 16...260 { _ = try await broker.publish(request(channel, "\(i)", size: 10)).get() }
            let all = try await broker.history(HistoryQuery(channel: channel, limit: -1)).get()
            try expect(all.publications.map(\.offset) == (251...260).map { UInt64($0) }, "after 260: \(all.publications.map(\.offset))")
            try expect(all.publications.map { String(buffer: $0.data) } == (251...260).map { "\($0)" }, "data of the last 10")
            let sinceOld = try await broker.history(HistoryQuery(channel: channel, sinceOffset: 3, limit: 4)).get()
            try expect(sinceOld.publications.map(\.offset) == [251, 252, 253, 254], "since 3, limit 4: \(sinceOld.publications.map(\.offset))")
            let newest = try await broker.history(HistoryQuery(channel: channel, sinceOffset: 100, limit: -1, reverse: true)).get()
            try expect(newest.publications.map(\.offset) == (251...260).reversed().map { UInt64($0) }, "reverse since 100: \(newest.publications.map(\.offset))")
            // A smaller size applies from the next publication on.
            _ = try await broker.publish(request(channel, "261", size: 5)).get()
            let shrunk = try await broker.history(HistoryQuery(channel: channel, limit: -1)).get()
            try expect(shrunk.publications.map(\.offset) == (257...261).map { UInt64($0) }, "size 5: \(shrunk.publications.map(\.offset))")
        },
        Case(name: "history since an offset, with limit and reverse") { broker, _ in
            let channel = unique("conf")
            for i in 1...10 { _ = try await broker.publish(request(channel, "\(i)", size: 100)).get() }
            let since = try await broker.history(HistoryQuery(channel: channel, sinceOffset: 7, limit: -1)).get()
            try expect(since.publications.map(\.offset) == [8, 9, 10], "since 7: \(since.publications.map(\.offset))")
            let limited = try await broker.history(HistoryQuery(channel: channel, sinceOffset: 2, limit: 3)).get()
            try expect(limited.publications.map(\.offset) == [3, 4, 5], "limit 3: \(limited.publications.map(\.offset))")
            let reversed = try await broker.history(HistoryQuery(channel: channel, limit: 2, reverse: true)).get()
            try expect(reversed.publications.map(\.offset) == [10, 9], "reverse: \(reversed.publications.map(\.offset))")
            let positionOnly = try await broker.history(HistoryQuery(channel: channel, limit: 0)).get()
            try expect(positionOnly.publications.isEmpty && positionOnly.position.offset == 10, "limit 0 reads the position only")
        },
        Case(name: "history of an unknown channel is empty at offset 0 with an epoch") { broker, _ in
            let history = try await broker.history(HistoryQuery(channel: unique("conf"), limit: -1)).get()
            try expect(history.publications.isEmpty && history.position.offset == 0, "unknown channel not empty")
            try expect(!history.position.epoch.isEmpty, "no epoch for an unknown channel")
        },
        Case(name: "history expires after its TTL") { broker, _ in
            let channel = unique("conf")
            _ = try await broker.publish(request(channel, "1", size: 10, ttl: 1)).get()
            try await Task.sleep(nanoseconds: 1_600_000_000)
            let history = try await broker.history(HistoryQuery(channel: channel, limit: -1)).get()
            try expect(history.publications.isEmpty, "publication outlived its TTL")
        },
        Case(name: "a channel without history gets no offsets and keeps nothing") { broker, recorder in
            let channel = unique("conf")
            try await broker.subscribe(channel: channel).get()
            let result = try await broker.publish(request(channel, "1", size: 0)).get()
            try expect(result.position.offset == 0, "offset for a channel without history")
            try await recorder.wait { $0.publications(in: channel).count == 1 }
            try expect(recorder.publications(in: channel)[0].0.offset == 0, "delivered with an offset")
            let history = try await broker.history(HistoryQuery(channel: channel, limit: -1)).get()
            try expect(history.publications.isEmpty, "kept history")
        },
        Case(name: "idempotent publish returns the first result and publishes once") { broker, recorder in
            let channel = unique("conf")
            try await broker.subscribe(channel: channel).get()
            let first = try await broker.publish(request(channel, "a", key: "k1")).get()
            let second = try await broker.publish(request(channel, "a", key: "k1")).get()
            let third = try await broker.publish(request(channel, "b", key: "k2")).get()
            try expect(first.position == second.position, "repeat got a new position")
            try expect(second.duplicate && !first.duplicate, "duplicate flag wrong")
            try expect(third.position.offset == first.position.offset + 1, "next key did not advance by one")
            try await recorder.wait { $0.publications(in: channel).count >= 2 }
            try await Task.sleep(nanoseconds: 100_000_000)
            try expect(recorder.publications(in: channel).count == 2, "repeat was delivered")
        },
        Case(name: "presence add, list, remove and expiry") { broker, _ in
            let channel = unique("conf")
            try await broker.addPresence(channel: channel, info: ClientInfo(client: "c1", user: "u1"), ttl: 60).get()
            try await broker.addPresence(channel: channel, info: ClientInfo(client: "c2", user: "u1"), ttl: 60).get()
            try await broker.addPresence(channel: channel, info: ClientInfo(client: "c3", user: ""), ttl: 4).get()
            var present = try await broker.presence(channel: channel).get()
            try expect(Set(present.map(\.client)) == ["c1", "c2", "c3"], "presence \(present.map(\.client))")
            try await broker.removePresence(channel: channel, clients: ["c1"]).get()
            try await Task.sleep(nanoseconds: 4_300_000_000)
            present = try await broker.presence(channel: channel).get()
            try expect(present.map(\.client) == ["c2"], "after remove and expiry: \(present.map(\.client))")
        },
        Case(name: "presence of many clients added in one call, info kept, refreshed by a later call") { broker, _ in
            let channel = unique("conf")
            let clients = (0..<600).map { ClientInfo(client: "m\($0)", user: "u\($0 % 7)", info: .object(JSONObject([("n", .integer($0))]))) }
            // An 8 s life: the reads right after the add must not outlast it even on a machine busy
            // with the whole suite (3 s did once, in CI: 0 present of 600).
            try await broker.addPresence(channel: channel, clients: clients, ttl: 8).get()
            try await broker.addPresence(channel: channel, clients: [], ttl: 60).get()
            var present = try await broker.presence(channel: channel).get()
            try expect(present.count == 600, "\(present.count) present of 600")
            try expect(present.first { $0.client == "m42" }?.info == .object(JSONObject([("n", .integer(42))])), "info lost")
            try await broker.addPresence(channel: channel, clients: Array(clients[0..<3]), ttl: 60).get()
            try await Task.sleep(nanoseconds: 8_300_000_000)
            present = try await broker.presence(channel: channel).get()
            try expect(Set(present.map(\.client)) == ["m0", "m1", "m2"], "after expiry: \(present.count) present")
        },
        Case(name: "join and leave reach subscribers") { broker, recorder in
            let channel = unique("conf")
            try await broker.subscribe(channel: channel).get()
            let info = ClientInfo(client: "c9", user: "u9")
            try await broker.publishPresenceEvent(.join(info), channel: channel).get()
            try await broker.publishPresenceEvent(.leave(info), channel: channel).get()
            try await recorder.wait { recorder in
                recorder.all.filter { if case .presence(channel, _) = $0 { return true } else { return false } }.count == 2
            }
            let events = recorder.all.compactMap { event -> PresenceEvent? in
                if case .presence(channel, let e) = event { return e }
                return nil
            }
            try expect(events == [.join(info), .leave(info)], "presence events \(events)")
        },
        Case(name: "node registry announce, list, remove, expiry") { broker, _ in
            let a = NodeInfo(id: unique("node"), name: "a", address: "127.0.0.1:1", connections: 3, weight: 7, maxConnections: 500)
            let b = NodeInfo(id: unique("node"), name: "b", address: "127.0.0.1:2")
            try await broker.announce(a, ttl: 30).get()
            try await broker.announce(b, ttl: 4).get()
            var nodes = try await broker.nodes().get()
            try expect(Set(nodes.map(\.id)).isSuperset(of: [a.id, b.id]), "registry misses a node")
            let listed = nodes.first { $0.id == a.id }
            try expect(listed?.connections == 3 && listed?.weight == 7 && listed?.maxConnections == 500, "figures lost: \(String(describing: listed))")
            try await Task.sleep(nanoseconds: 4_300_000_000)
            nodes = try await broker.nodes().get()
            try expect(!nodes.contains { $0.id == b.id }, "expired node still listed")
            try await broker.removeNode(id: a.id).get()
            nodes = try await broker.nodes().get()
            try expect(!nodes.contains { $0.id == a.id }, "removed node still listed")
        },
        Case(name: "connections per user are capped across nodes; a release makes room; acquire and release are idempotent") { broker, _, environment in
            let user = unique("user")
            let a = unique("node")
            let b = unique("node")
            try await broker.announce(NodeInfo(id: a, name: "a", address: "127.0.0.1:1"), ttl: 30).get()
            try await broker.announce(NodeInfo(id: b, name: "b", address: "127.0.0.1:2"), ttl: 30).get()
            let before = try await environment.footprint()
            func acquire(_ connection: String, on node: String, _ who: String = user, limit: Int = 3) async throws -> Bool {
                try await broker.acquireUserConnection(user: who, connection: connection, node: node, limit: limit).get()
            }
            func release(_ connection: String, _ who: String = user) async throws {
                try await broker.releaseUserConnection(user: who, connection: connection).get()
            }
            for (connection, node) in [("a1", a), ("a2", a), ("b1", b)] {
                try expect(try await acquire(connection, on: node), "\(connection) refused under the cap")
            }
            try expect(!(try await acquire("a3", on: a)), "a 4th connection on node a")
            try expect(!(try await acquire("b2", on: b)), "a 4th connection on node b")
            try expect(try await acquire("a1", on: a), "a repeated acquire of a counted connection refused")
            let other = unique("user")
            try expect(try await acquire("o1", on: a, other), "another user held back")
            try expect(try await acquire("z", on: a, limit: 0), "limit 0 counts nothing and admits")
            try await release("b1")
            try expect(try await acquire("b2", on: b), "no room after a release")
            try expect(!(try await acquire("a3", on: a)), "over the cap after taking the room")
            // Releasing what is not counted changes nothing, however often.
            try await release("b1")
            try await release("never")
            try await release("a1", unique("user"))
            try expect(!(try await acquire("a3", on: a)), "a repeated or foreign release made room")
            let holding = try await environment.footprint()
            try expect(holding != before, "the footprint does not show connections counted: \(holding)")
            for connection in ["a1", "a2", "b2", "a1"] { try await release(connection) }
            try await release("o1", other)
            try expect(try await acquire("x", on: a, limit: 1), "no room after releasing everything")
            try expect(!(try await acquire("y", on: b, limit: 1)), "a second connection under limit 1")
            try await release("x")
            let after = try await environment.footprint()
            try expect(after == before, "released connections left something behind: \(before) then \(after)")
        },
        Case(name: "connections per user: a node gone from the registry stops counting; the caller always counts") { broker, _ in
            let user = unique("user")
            let a = unique("node")
            let removed = unique("node")
            let expiring = unique("node")
            let unannounced = unique("node")
            try await broker.announce(NodeInfo(id: a, name: "a", address: "127.0.0.1:1"), ttl: 30).get()
            try await broker.announce(NodeInfo(id: removed, name: "r", address: "127.0.0.1:2"), ttl: 30).get()
            // 10 s: the five acquires below must come before it expires, also on a loaded machine (a
            // clean-clone run with the Redis Cluster suites in parallel missed 1 s once and 3 s once).
            let expiringTTL = 10.0
            let announced = NIODeadline.now()
            try await broker.announce(NodeInfo(id: expiring, name: "e", address: "127.0.0.1:3"), ttl: expiringTTL).get()
            func acquire(_ connection: String, on node: String) async throws -> Bool {
                try await broker.acquireUserConnection(user: user, connection: connection, node: node, limit: 2).get()
            }
            try expect(try await acquire("r1", on: removed), "first connection")
            try expect(try await acquire("e1", on: expiring), "second connection")
            try expect(!(try await acquire("a1", on: a)), "third connection under limit 2")
            try await broker.removeNode(id: removed).get()
            try expect(try await acquire("a1", on: a), "a removed node still counts")
            try expect(!(try await acquire("a2", on: a)), "over the cap again")
            // Once the entry expires its connection stops counting (asked until then: a refused acquire counts nothing).
            let deadline = announced + .seconds(Int64(expiringTTL) + 5)
            var admitted = false
            while !admitted && NIODeadline.now() < deadline {
                try await Task.sleep(nanoseconds: 250_000_000)
                admitted = try await acquire("a2", on: a)
            }
            try expect(admitted, "an expired node still counts")
            try expect(!(try await acquire("a3", on: a)), "over the cap with two on node a")
            // A node counts its own connections whether or not it is announced.
            let other = unique("user")
            try expect(try await broker.acquireUserConnection(user: other, connection: "u1", node: unannounced, limit: 1).get(), "first, unannounced")
            try expect(!(try await broker.acquireUserConnection(user: other, connection: "u2", node: unannounced, limit: 1).get()),
                "the caller's own connections were dropped")
            try await broker.releaseUserConnection(user: other, connection: "u1").get()
            for connection in ["a1", "a2", "r1", "e1"] { try await broker.releaseUserConnection(user: user, connection: connection).get() }
            try await broker.removeNode(id: a).get()
        },
        Case(name: "connections per user: any user text is a plain key; too long a user is refused") { broker, _ in
            let node = unique("node")
            let odd = "}{'\"\\ ]] end; redis.call('FLUSHALL') --" + unique("u")
            try expect(try await broker.acquireUserConnection(user: odd, connection: "c1", node: node, limit: 1).get(), "odd user refused")
            try expect(!(try await broker.acquireUserConnection(user: odd, connection: "c2", node: node, limit: 1).get()), "odd user not counted")
            try expect(try await broker.acquireUserConnection(user: odd + "x", connection: "c1", node: node, limit: 1).get(),
                "a user sharing a prefix was held back")
            try await broker.releaseUserConnection(user: odd, connection: "c1").get()
            try await broker.releaseUserConnection(user: odd + "x", connection: "c1").get()
            let long = String(repeating: "u", count: broker.maximumUserBytesForConformance + 1)
            do {
                _ = try await broker.acquireUserConnection(user: long, connection: "c1", node: node, limit: 5).get()
                throw Failure("a user of \(long.utf8.count) bytes was counted")
            } catch let error as BrokerError {
                try expect(error.code == .invalidRequest, "wrong error \(error)")
            }
        },
        Case(name: "control messages reach the node") { broker, recorder in
            let message = ControlMessage.disconnect(client: "c1", user: nil, code: 3502, reason: "forced")
            try await broker.sendControl(message, to: nil).get()
            try await recorder.wait { $0.all.contains(.control(message)) }
        },
        Case(name: "concurrent publishers get distinct consecutive offsets") { broker, recorder in
            let channel = unique("conf")
            try await broker.subscribe(channel: channel).get()
            let offsets = try await withThrowingTaskGroup(of: UInt64.self) { group in
                for i in 0..<50 { group.addTask { try await broker.publish(request(channel, "\(i)", size: 100)).get().position.offset } }
                var all: [UInt64] = []
                for try await offset in group { all.append(offset) }
                return all
            }
            try expect(offsets.sorted() == (1...50).map { UInt64($0) }, "offsets not 1...50")
            try await recorder.wait { $0.publications(in: channel).count == 50 }
            try expect(recorder.publications(in: channel).map(\.0.offset) == (1...50).map { UInt64($0) }, "delivery out of order")
        },
    ]
}

extension Broker {
    /// The user name limit the conformance cases assume (`BrokerLimits()`'s).
    fileprivate var maximumUserBytesForConformance: Int { BrokerLimits().maximumUserBytes }
}
