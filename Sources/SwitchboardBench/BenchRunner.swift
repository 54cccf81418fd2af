import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Runs one process's share of a scenario: opens its connections, paces its
/// publishers, waits (every wait bounded by the run deadline), closes, and
/// returns the merged counters of its event loops.
///
/// As a worker (`configuration.worker` set) it reports phases over its
/// `WorkerLink` and waits for the coordinator where the phases meet; alone,
/// it also samples the server processes itself.
///
/// About 530 lines: one run's phases in the order they happen (open, pace,
/// wait, close), each bounded by the same run deadline; split, the deadlines
/// would be hard to follow.
final class BenchRunner {
    let configuration: BenchConfiguration
    private let link: WorkerLink?
    private let group: MultiThreadedEventLoopGroup
    /// One thread for the publishers (fanout scenarios), so pacing keeps time.
    private let publisherGroup: MultiThreadedEventLoopGroup?
    private let loops: [any EventLoop]
    private let counters: [NIOLoopBound<LoopCounters>]
    private let connector: BenchConnector
    private let reader: CounterReader
    let progress: ProgressReporter
    let epochNanoseconds: Int64
    let startNanoseconds: Int64
    private let deadline: NIODeadline
    /// Counts kept by the runner itself (expected deliveries, connect start).
    private var local: BenchCounters
    private(set) var watch: ServerProcessWatch?
    private(set) var notes: [String] = []
    private(set) var timedOut = false
    private var subscribers: [BenchConnection] = []
    private var publishers: [BenchConnection] = []

    var threadCount: Int { self.loops.count }

    init(configuration: BenchConfiguration, link: WorkerLink?) throws {
        self.configuration = configuration
        self.link = link
        let threads = configuration.threads > 0 ? configuration.threads : System.coreCount
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let role = configuration.worker?.role ?? .all
        self.publisherGroup = configuration.scenario.publishes && role != .subscribers
            ? MultiThreadedEventLoopGroup(numberOfThreads: 1) : nil
        self.loops = Array(self.group.makeIterator()) + (self.publisherGroup.map { Array($0.makeIterator()) } ?? [])
        self.startNanoseconds = WallClock.nanoseconds()
        self.epochNanoseconds = configuration.worker?.seriesEpochNanoseconds ?? self.startNanoseconds
        let epoch = self.epochNanoseconds
        self.counters = try self.loops.map { loop in
            try loop.submit { NIOLoopBound(LoopCounters(seriesEpochNanoseconds: epoch), eventLoop: loop) }.wait()
        }
        do {
            self.connector = try BenchConnector(
                loops: self.loops, counters: self.counters, connectionLoopCount: threads, configuration: configuration
            )
        } catch {
            try? self.group.syncShutdownGracefully()
            try? self.publisherGroup?.syncShutdownGracefully()
            throw error
        }
        self.reader = CounterReader(loops: self.loops, counters: self.counters)
        self.progress = ProgressReporter(scenario: configuration.scenario)
        self.deadline = .now() + .milliseconds(Int64(configuration.timeout * 1000))
        self.local = BenchCounters(seriesEpochNanoseconds: epoch)
        if link == nil, !configuration.serverPIDs.isEmpty {
            self.watch = ServerProcessWatch(pids: configuration.serverPIDs)
        }
    }

    /// Runs the scenario and shuts the event loops down.
    func execute(progressSink: (@Sendable (ProgressCounts, String) -> Void)?) async -> BenchCounters {
        let reader = self.reader
        let progressTask = progressSink.map { sink in
            self.progress.run(source: { await reader.progress() }, sink: sink)
        }
        switch self.configuration.scenario {
        case .connect, .idle:
            await self.runConnections()
        case .fanout, .latency, .crossNode:
            await self.runFanout()
        case .pingpong:
            await self.runPingPong()
        }
        progressTask?.cancel()
        var total = await self.reader.full(seriesEpochNanoseconds: self.epochNanoseconds)
        total.merge(self.local)
        try? await self.group.shutdownGracefully()
        try? await self.publisherGroup?.shutdownGracefully()
        return total
    }

    // MARK: helpers

    private var expired: Bool { NIODeadline.now() >= self.deadline }

    /// Tells the coordinator a phase is done, with fresh counts first.
    private func report(_ phase: WorkerEvent.Phase) async {
        guard let link = self.link else { return }
        link.emit(WorkerEvent(kind: .progress, progress: await self.reader.progress()))
        link.emit(phase: phase)
    }

    private func note(_ text: String) {
        if !self.notes.contains(text) { self.notes.append(text) }
    }

    private func markTimedOut(_ during: String) {
        if !self.timedOut { self.note("the run hit --timeout \(ResultTable.format(self.configuration.timeout, digits: 0)) s during \(during)") }
        self.timedOut = true
    }

    private func sleep(seconds: Double) async {
        let until = min(self.deadline, .now() + .milliseconds(Int64(seconds * 1000)))
        while NIODeadline.now() < until {
            let left = (until - .now()).nanoseconds
            try? await Task.sleep(nanoseconds: UInt64(max(0, min(left, 100_000_000))))
            if self.link?.stopRequested == true { return }
        }
    }

    /// Polls `done` every 20 ms until it holds, the deadline or `limit` passes; true if it held.
    private func wait(limit: Double? = nil, _ done: (ProgressCounts) -> Bool) async -> Bool {
        let until = limit.map { min(self.deadline, .now() + .milliseconds(Int64($0 * 1000))) } ?? self.deadline
        while true {
            let counts = await self.reader.progress()
            if done(counts) { return true }
            if NIODeadline.now() >= until || self.link?.stopRequested == true { return false }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    /// Opens `count` WebSocket connections at the configured rate with at
    /// most `dialConcurrency` handshakes in flight; connection i (global
    /// index base + i) goes to url i mod U and, when `subscribe`, subscribes
    /// to channel i mod K.
    private func openConnections(count: Int, subscribe: Bool, pingPong: Bool = false) async -> [BenchConnection] {
        struct OpenState {
            var inFlight = 0
            var connections: [BenchConnection] = []
        }
        let state = NIOLockedValueBox(OpenState())
        let base = self.configuration.worker?.indexBase ?? 0
        let rate = self.configuration.connectRate
        let limit = self.configuration.dialConcurrency
        let started = NIODeadline.now()
        BenchCounters.minNonZero(&self.local.connectStartNanoseconds, WallClock.nanoseconds())
        self.progress.expect(connections: Int64(count))
        var i = 0
        while i < count {
            if self.expired {
                self.markTimedOut("connecting (\(i) of \(count) attempted)")
                break
            }
            if self.link?.stopRequested == true { break }
            let elapsed = Double((NIODeadline.now() - started).nanoseconds) / 1e9
            let due = rate > 0 ? min(count, Int(elapsed * rate) + 1) : count
            while i < due {
                let admitted = state.withLockedValue { s -> Bool in
                    guard s.inFlight < limit else { return false }
                    s.inFlight += 1
                    return true
                }
                guard admitted else { break }
                let global = base + i
                let url = self.configuration.urls[global % self.configuration.urls.count]
                let channel = subscribe ? self.configuration.channelName(global) : nil
                let bound = self.counters[self.connector.loopIndex(for: i)]
                let settings = pingPong && channel != nil
                    ? PingPongSettings(
                        channel: channel ?? "",
                        source: global,
                        payloadSize: self.configuration.payloadSize,
                        timeoutNanoseconds: Int64(self.configuration.roundTripTimeout * 1e9)
                    ) : nil
                self.connector.openWebSocket(index: i, url: url, subscribeTo: channel, pingPong: settings).whenComplete { result in
                    let counters = bound.value
                    counters.counters.attempted += 1
                    switch result {
                    case .success(let connection):
                        counters.counters.connected += 1
                        state.withLockedValue {
                            $0.inFlight -= 1
                            $0.connections.append(connection)
                        }
                    case .failure(let error):
                        counters.counters.failed += 1
                        counters.counters.noteFailure("connect to \(url): \(error)")
                        state.withLockedValue { $0.inFlight -= 1 }
                    }
                }
                i += 1
            }
            if i < count { try? await Task.sleep(nanoseconds: 1_000_000) }
        }
        // the handshakes still in flight end within the handshake timeout
        let until = min(self.deadline, .now() + .milliseconds(Int64((self.configuration.handshakeTimeout + 2) * 1000)))
        while state.withLockedValue({ $0.inFlight }) > 0, NIODeadline.now() < until {
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return state.withLockedValue { $0.connections }
    }

    /// Waits until every established connection's subscribe reply arrived.
    private func awaitSubscriptions() async {
        let confirmed = await self.wait(limit: self.configuration.handshakeTimeout) { c in
            c.subscribed + c.subscribeErrors >= c.connected
        }
        if !confirmed {
            if self.expired { self.markTimedOut("subscribing") } else { self.note("not every subscribe reply arrived in time") }
        }
    }

    private func closeAll(_ connections: [BenchConnection]) async {
        await self.reader.markClosing()
        var byLoop = [[any Channel]](repeating: [], count: self.loops.count)
        for connection in connections { byLoop[connection.loopIndex].append(connection.channel) }
        for (loop, channels) in zip(self.loops, byLoop) where !channels.isEmpty {
            loop.execute {
                for channel in channels { BenchConnection.abort(channel) }
            }
        }
        let closed = EventLoopFuture.andAllComplete(connections.map(\.channel.closeFuture), on: self.loops[0])
        _ = try? await closed.get()
    }

    // MARK: connect and idle

    /// connect: open (and subscribe), hold, close. idle: open, subscribe,
    /// let the server settle, sample its RSS, close, sample again.
    private func runConnections() async {
        let isIdle = self.configuration.scenario == .idle
        let subscribe = isIdle || self.configuration.subscribe
        self.progress.set(phase: "connecting")
        let connections = await self.openConnections(count: self.configuration.connections, subscribe: subscribe)
        self.subscribers = connections
        if subscribe {
            self.progress.set(phase: "subscribing")
            await self.awaitSubscriptions()
        }
        self.watch?.sampleOpen()
        if let link = self.link {
            self.progress.set(phase: "holding")
            await self.report(.connected)
            if !(await link.wait(for: .go, until: self.deadline)) {
                if self.expired { self.markTimedOut("holding") }
            }
        } else {
            self.progress.set(phase: isIdle ? "settling" : "holding")
            await self.sleep(seconds: self.configuration.hold)
            if isIdle { self.watch?.sampleOpen() }
            self.watch?.sampleEnd()
        }
        self.progress.set(phase: "closing")
        await self.closeAll(connections)
        if self.link == nil, self.watch != nil, isIdle {
            await self.sleep(seconds: 1)
            self.watch?.sampleAfterClose()
        }
    }

    // MARK: fanout, latency, cross-node

    /// How many of `messages`, dealt round robin over `channels`, go to `channel`.
    static func messages(for channel: Int, messages: Int, channels: Int) -> Int64 {
        Int64(messages / channels + (channel < messages % channels ? 1 : 0))
    }

    private func openPublishers() async -> [BenchConnection] {
        var opened: [BenchConnection] = []
        let base = self.subscribers.count
        for p in 0..<self.configuration.publishers {
            let url = self.configuration.publisherURLs[p % self.configuration.publisherURLs.count]
            let future: EventLoopFuture<BenchConnection>
            switch self.configuration.publishVia {
            case .websocket:
                future = self.connector.openWebSocket(
                    index: base + p, url: url, subscribeTo: nil, countsHandshake: false, slot: self.connector.publisherSlot
                )
            case .api:
                future = self.connector.openAPI(index: base + p, url: url, slot: self.connector.publisherSlot)
            }
            do {
                opened.append(try await future.get())
            } catch {
                self.note("publisher \(p) could not connect to \(url): \(error)")
            }
        }
        return opened
    }

    /// Finds the publish endpoint of a publisher connection (on its loop).
    private static func endpoint(_ channel: any Channel, via: PublishTransport) throws -> any PublishEndpoint {
        switch via {
        case .websocket: try channel.pipeline.syncOperations.handler(type: BenchClientHandler.self)
        case .api: try channel.pipeline.syncOperations.handler(type: APIPublishHandler.self)
        }
    }

    private func startWarmup(_ publisher: BenchConnection) async -> NIOLoopBound<WarmupPublisher>? {
        let loop = self.loops[publisher.loopIndex]
        let configuration = self.configuration
        let channel = publisher.channel
        return try? await loop.submit {
            let warmup = WarmupPublisher(
                endpoint: try Self.endpoint(channel, via: configuration.publishVia),
                eventLoop: loop,
                configuration: configuration
            )
            warmup.start()
            return NIOLoopBound(warmup, eventLoop: loop)
        }.get()
    }

    private func stopWarmup(_ warmup: NIOLoopBound<WarmupPublisher>?) async {
        guard let warmup else { return }
        _ = try? await warmup.eventLoop.submit { warmup.value.stop() }.get()
    }

    /// Starts every publisher's pacer at one shared start time; the future
    /// completes when all have sent their share (or hit the deadline).
    private func startPacers(_ publishers: [BenchConnection]) -> EventLoopFuture<Void> {
        let start = NIODeadline.now() + .milliseconds(5)
        let configuration = self.configuration
        let deadline = self.deadline
        var futures: [EventLoopFuture<Void>] = []
        for (p, publisher) in publishers.enumerated() {
            let loop = self.loops[publisher.loopIndex]
            let bound = self.counters[publisher.loopIndex]
            let done = loop.makePromise(of: Void.self)
            let channel = publisher.channel
            loop.execute {
                do {
                    let pacer = PublishPacer(
                        endpoint: try Self.endpoint(channel, via: configuration.publishVia),
                        loop: bound.value,
                        eventLoop: loop,
                        configuration: configuration,
                        index: p,
                        deadline: deadline,
                        done: done
                    )
                    pacer.start(at: start)
                } catch {
                    done.fail(error)
                }
            }
            futures.append(done.futureResult)
        }
        return EventLoopFuture.andAllComplete(futures, on: self.loops[0])
    }

    /// The fanout family. Subscribers connect and subscribe; a warm-up proves
    /// every subscription live end to end; then the publishers send the
    /// measured messages and the subscribers count deliveries until all
    /// expected arrived, or none came for `idleTimeout` after publishing
    /// ended, or the deadline.
    private func runFanout() async {
        let role = self.configuration.worker?.role ?? .all
        let total = self.configuration.worker?.totalConnections ?? self.configuration.connections
        let channels = self.configuration.channelCount
        if role == .publishers {
            self.progress.expect(connections: Int64(total))
        }
        self.progress.expect(publications: Int64(role == .subscribers ? 0 : self.configuration.messages))
        if role != .publishers {
            self.progress.set(phase: "connecting")
            self.subscribers = await self.openConnections(count: self.configuration.connections, subscribe: true)
            self.progress.set(phase: "subscribing")
            await self.awaitSubscriptions()
            let base = self.configuration.worker?.indexBase ?? 0
            self.local.expected = self.subscribers.reduce(0) {
                $0 + Self.messages(for: (base + $1.index) % channels, messages: self.configuration.messages, channels: channels)
            }
            self.progress.expect(deliveries: self.local.expected)
            self.watch?.sampleOpen()
            await self.report(.subscribed)
        }
        if role != .subscribers {
            self.progress.set(phase: "publishers")
            self.publishers = await self.openPublishers()
            if self.publishers.isEmpty {
                self.note("no publisher could connect: nothing was published")
            }
        }

        // warm-up
        self.progress.set(phase: "warm-up")
        let subscriberCount = Int64(self.subscribers.count)
        var warmup: NIOLoopBound<WarmupPublisher>?
        if let first = self.publishers.first { warmup = await self.startWarmup(first) }
        switch role {
        case .all:
            if warmup != nil {
                let warm = await self.wait(limit: self.configuration.warmupTimeout) { $0.warmed >= subscriberCount }
                if !warm { self.note("warm-up: not every subscriber received a warm-up publication within \(self.configuration.warmupTimeout) s") }
            }
        case .subscribers:
            let warm = await self.wait(limit: self.configuration.warmupTimeout) { $0.warmed >= subscriberCount }
            if !warm { self.note("warm-up: not every subscriber of worker \(self.configuration.worker?.processIndex ?? 0) was warm in time") }
            await self.report(.ready)
        case .publishers:
            if let link = self.link, !(await link.wait(for: .go, until: self.deadline)) {
                self.markTimedOut("warm-up")
            }
        }
        await self.stopWarmup(warmup)
        try? await Task.sleep(nanoseconds: 100_000_000)  // let the last warm-ups drain
        self.watch?.startCPU()

        // measure
        self.progress.set(phase: "measuring")
        let pacersDone = NIOLockedValueBox(false)
        if role != .subscribers, !self.publishers.isEmpty, !self.expired {
            self.startPacers(self.publishers).whenComplete { _ in pacersDone.withLockedValue { $0 = true } }
        } else {
            pacersDone.withLockedValue { $0 = true }
        }
        if role == .publishers {
            while !pacersDone.withLockedValue({ $0 }), !self.expired, self.link?.stopRequested != true {
                try? await Task.sleep(nanoseconds: 10_000_000)
            }
            if self.expired { self.markTimedOut("publishing") }
            await self.report(.published)
            await self.sleep(seconds: 1)  // let the server read what was sent before the publishers close
        } else {
            await self.awaitDeliveries(publishersDone: {
                role == .all ? pacersDone.withLockedValue { $0 } : (self.link?.has(.published) ?? false)
            })
        }
        self.watch?.sampleEnd()
        self.progress.set(phase: "closing")
        await self.closeAll(self.subscribers + self.publishers)
    }

    // MARK: pingpong

    /// pingpong: every connection subscribes to its channel; once all are
    /// subscribed, each starts its closed loop (publish, wait for its own
    /// publication to come back, publish the next). The measured window runs
    /// from the start until `duration` passes or `maxRoundTrips` were started;
    /// then no loop publishes again, the round trips in flight get
    /// `idleTimeout` to come back, and what did not is lost.
    private func runPingPong() async {
        self.progress.set(phase: "connecting")
        let connections = await self.openConnections(count: self.configuration.connections, subscribe: true, pingPong: true)
        self.progress.set(phase: "subscribing")
        await self.awaitSubscriptions()
        self.watch?.sampleOpen()
        self.progress.expect(publications: Int64(self.configuration.maxRoundTrips))

        // each connection loop's share of the round-trip budget
        let loopCount = self.connector.connectionLoopCount
        let total = Int64(self.configuration.maxRoundTrips)
        for slot in 0..<loopCount {
            let share = total / Int64(loopCount) + (Int64(slot) < total % Int64(loopCount) ? 1 : 0)
            let bound = self.counters[slot]
            _ = try? await self.loops[slot].submit {
                bound.value.pingPongBudget = share
                bound.value.pingPongOpen = true
            }.get()
        }
        self.progress.set(phase: "measuring")
        self.watch?.startCPU()
        let start = WallClock.nanoseconds()
        let measureStart = NIODeadline.now()
        let measureUntil = min(self.deadline, measureStart + .milliseconds(Int64(self.configuration.duration * 1000)))
        var byLoop = [[any Channel]](repeating: [], count: self.loops.count)
        for connection in connections { byLoop[connection.loopIndex].append(connection.channel) }
        for (loop, channels) in zip(self.loops, byLoop) where !channels.isEmpty {
            loop.execute {
                for channel in channels { channel.pipeline.fireUserInboundEventTriggered(PingPongStart()) }
            }
        }
        while NIODeadline.now() < measureUntil {
            let counts = await self.reader.progress()
            if counts.published >= total, counts.delivered >= counts.published { break }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        if NIODeadline.now() >= self.deadline { self.markTimedOut("pingpong") }
        // stop: no loop starts another round trip
        for slot in 0..<loopCount {
            let bound = self.counters[slot]
            _ = try? await self.loops[slot].submit { bound.value.pingPongOpen = false }.get()
        }
        let end = WallClock.nanoseconds()
        let atStop = await self.reader.progress()
        self.watch?.sampleEnd()
        self.local.measuredRoundTrips = atStop.delivered
        self.local.measureStartNanoseconds = start
        self.local.measureEndNanoseconds = end

        self.progress.set(phase: "draining")
        let drained = await self.wait(limit: self.configuration.idleTimeout) { $0.delivered + $0.timedOutRoundTrips >= $0.published }
        if !drained { self.note("not every round trip in flight came back within \(ResultTable.format(self.configuration.idleTimeout, digits: 1)) s of the stop") }
        self.progress.set(phase: "closing")
        await self.closeAll(connections)
    }

    private func awaitDeliveries(publishersDone: () -> Bool) async {
        let expected = self.local.expected
        let idle = Int64(self.configuration.idleTimeout * 1e9)
        var lastDelivered: Int64 = -1
        var lastChange = NIODeadline.now()
        var doneAt: NIODeadline?
        while true {
            let counts = await self.reader.progress()
            if counts.delivered >= expected { return }
            let now = NIODeadline.now()
            if counts.delivered != lastDelivered {
                lastDelivered = counts.delivered
                lastChange = now
            }
            if doneAt == nil, publishersDone() { doneAt = now }
            if let doneAt, (now - max(doneAt, lastChange)).nanoseconds > idle {
                self.note("stopped \(ResultTable.format(self.configuration.idleTimeout, digits: 1)) s after the last delivery, with publishing over")
                return
            }
            if self.expired {
                self.markTimedOut("delivery")
                return
            }
            if self.link?.stopRequested == true { return }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }
}

@available(*, unavailable)
extension BenchRunner: Sendable {}
