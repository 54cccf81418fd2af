import NIOCore

/// Sends one publisher's share of the measured publications on its event
/// loop: message j (seq j+1, channel j mod K) for every j ≡ index (mod P),
/// due at t0 + j / rate, so P publishers together send at the configured
/// rate. Paced against absolute due times, so a late wake-up is caught up
/// rather than accumulated; bounded by the message count and the deadline.
final class PublishPacer {
    private let endpoint: any PublishEndpoint
    private let loop: LoopCounters
    private let eventLoop: any EventLoop
    private let configuration: BenchConfiguration
    private let publisherCount: Int
    private let source: Int?
    private let deadline: NIODeadline
    private let done: EventLoopPromise<Void>
    private var next: Int
    private var start = NIODeadline.now()
    private var stopped = false
    /// Messages written in one tick at most, so other work on the loop gets a turn.
    private static let batch = 512

    init(
        endpoint: any PublishEndpoint,
        loop: LoopCounters,
        eventLoop: any EventLoop,
        configuration: BenchConfiguration,
        index: Int,
        deadline: NIODeadline,
        done: EventLoopPromise<Void>
    ) {
        self.endpoint = endpoint
        self.loop = loop
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.publisherCount = configuration.publishers
        self.source = configuration.publishers > 1 ? index : nil
        self.next = index
        self.deadline = deadline
        self.done = done
    }

    func start(at start: NIODeadline) {
        self.start = start
        self.tick()
    }

    func stop() {
        guard !self.stopped else { return }
        self.stopped = true
        self.endpoint.flush()
        self.done.succeed(())
    }

    private func due(_ message: Int) -> NIODeadline {
        let rate = self.configuration.messageRate
        guard rate > 0 else { return self.start }
        return self.start + .nanoseconds(Int64(Double(message) / rate * 1e9))
    }

    private func tick() {
        guard !self.stopped else { return }
        let now = NIODeadline.now()
        if now > self.deadline || !self.endpoint.isOpen { return self.stop() }
        var sent = 0
        let messages = self.configuration.messages
        let paced = self.configuration.messageRate > 0
        while self.next < messages, sent < Self.batch {
            if paced, self.due(self.next) > now { break }
            guard self.endpoint.canPublish else { break }
            self.endpoint.publish(
                channel: self.configuration.channelName(self.next),
                seq: Int64(self.next + 1),
                source: self.source,
                size: self.configuration.payloadSize
            )
            let wall = WallClock.nanoseconds()
            self.loop.counters.published += 1
            BenchCounters.minNonZero(&self.loop.counters.publishStartNanoseconds, wall)
            BenchCounters.maxOf(&self.loop.counters.publishEndNanoseconds, wall)
            self.loop.counters.series.published(at: wall)
            self.next += self.publisherCount
            sent += 1
        }
        if sent > 0 { self.endpoint.flush() }
        if self.next >= messages { return self.stop() }
        let wait: TimeAmount
        if !self.endpoint.canPublish {
            wait = .milliseconds(1)
        } else if paced, sent < Self.batch {
            wait = max(.zero, self.due(self.next) - NIODeadline.now())
        } else {
            wait = .zero
        }
        if wait == .zero {
            self.eventLoop.assumeIsolated().execute { self.tick() }
        } else {
            self.eventLoop.assumeIsolated().scheduleTask(in: wait) { self.tick() }
        }
    }
}

@available(*, unavailable)
extension PublishPacer: Sendable {}
