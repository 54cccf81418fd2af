import CoreMetrics
import Foundation
import NIOCore
import SwitchboardCore

/// One event loop's share of the node: its sessions, which of them subscribe
/// to which channel, and the ping sweep. Applies the hub's batches: each
/// publication's message is written to every local subscriber, then every
/// touched connection is flushed once.
///
/// Confined to `eventLoop`; sessions are registered and removed only there.
final class LoopFanout: @unchecked Sendable {
    // @unchecked: state is touched only on `eventLoop` (callers hop there; entry points assert it).
    let eventLoop: any EventLoop
    let index: Int
    private let sweepInterval: TimeAmount

    private var channels: [String: LocalChannel] = [:]
    private var pending: [SubscriptionID: SessionSubscription] = [:]
    private var sessions: [String: ClientSession] = [:]
    /// WebSocket sessions not connected yet, swept like the others so the connect deadline applies
    /// to them (a socket upgraded and then silent is closed with 3501). At most one per connection.
    private var awaitingConnect: [ObjectIdentifier: ClientSession] = [:]
    private var dirty: [ClientSession] = []
    private var nextClientNumber: UInt64 = 0
    private var nextSubscriptionNumber: UInt64 = 0
    private var sweepTask: RepeatedTask?
    /// Completed when the last session here is gone, once a drain started.
    private var drained: EventLoopPromise<Void>?
    /// Whether sessions may still connect here: no longer once the node stops
    /// (`closeEverySession`), so none joins the hub after its shards stopped.
    private(set) var acceptsSessions = true
    private let allocator = ByteBufferAllocator()
    weak var hub: Hub?
    /// Where `counters` go once a second (nil in tests that do not look).
    var metrics: NodeMetrics?
    /// Counted here without locks, flushed into `metrics` by the sweep.
    var counters = LoopCounters()
    /// Long-poll presence entries written from this loop lately (one write per half entry life).
    var pollPresence = PollPresenceThrottle()

    init(eventLoop: any EventLoop, index: Int, sweepInterval: TimeAmount = .seconds(1)) {
        self.eventLoop = eventLoop
        self.index = index
        self.sweepInterval = sweepInterval
    }

    func start() {
        self.eventLoop.execute {
            self.sweepTask = self.eventLoop.scheduleRepeatedTask(initialDelay: self.sweepInterval, delay: self.sweepInterval) { _ in
                self.sweep()
            }
        }
    }

    func stop() {
        self.eventLoop.execute {
            self.sweepTask?.cancel()
            self.sweepTask = nil
            // Whoever waited for the drain stops waiting.
            self.drained?.succeed()
            self.drained = nil
        }
    }

    /// A node-unique client id: node, loop, counter.
    func makeClientID(node: String) -> String {
        self.nextClientNumber += 1
        return "\(node)-\(self.index)-\(String(self.nextClientNumber, radix: 36))"
    }

    /// A node-unique subscription id: the loop index in the low byte.
    func makeSubscriptionID() -> SubscriptionID {
        self.nextSubscriptionNumber += 1
        return self.nextSubscriptionNumber << 8 | SubscriptionID(self.index & 0xFF)
    }

    // MARK: Sessions

    func add(_ session: ClientSession, client: String) {
        self.eventLoop.assertInEventLoop()
        self.sessions[client] = session
    }

    /// The session of `client` on this loop, if it is connected here.
    func session(client: String) -> ClientSession? {
        self.eventLoop.assertInEventLoop()
        return self.sessions[client]
    }

    func remove(client: String) {
        self.eventLoop.assertInEventLoop()
        self.sessions[client] = nil
        if self.sessions.isEmpty, let drained = self.drained {
            self.drained = nil
            drained.succeed()
        }
    }

    var sessionCount: Int { self.sessions.count }

    /// A WebSocket session waiting for its `connect` (until it connects or closes).
    func addAwaitingConnect(_ session: ClientSession) {
        self.eventLoop.assertInEventLoop()
        self.awaitingConnect[ObjectIdentifier(session)] = session
    }

    func removeAwaitingConnect(_ session: ClientSession) {
        self.eventLoop.assertInEventLoop()
        self.awaitingConnect[ObjectIdentifier(session)] = nil
    }

    /// Sessions waiting for their `connect` here.
    var awaitingConnectCount: Int { self.awaitingConnect.count }

    /// Hands POSTed commands to the SSE session `client` here, if `secret` is its secret.
    func sessionCommands(client: String, secret: String, body: ByteBuffer) -> SessionCommandOutcome {
        guard let session = self.sessions[client], session.matchesSession(secret: secret) else {
            return .rejected(status: 404, message: "unknown session")
        }
        let outcome = session.receiveCommands(body)
        self.flushDirty()
        return outcome
    }

    func addPending(_ subscription: SessionSubscription) {
        self.pending[subscription.id] = subscription
    }

    func removePending(_ id: SubscriptionID) {
        self.pending[id] = nil
    }

    func addLive(_ subscription: SessionSubscription) {
        let channel: LocalChannel
        if let existing = self.channels[subscription.channel] {
            channel = existing
        } else {
            channel = LocalChannel()
            self.channels[subscription.channel] = channel
        }
        subscription.index = channel.subscribers.count
        channel.subscribers.append(subscription)
    }

    func removeLive(_ subscription: SessionSubscription) {
        guard subscription.index >= 0, let channel = self.channels[subscription.channel] else { return }
        let i = subscription.index
        guard i < channel.subscribers.count, channel.subscribers[i] === subscription else { return }
        let last = channel.subscribers.removeLast()
        if i < channel.subscribers.count {
            channel.subscribers[i] = last
            last.index = i
        }
        subscription.index = -1
        if channel.subscribers.isEmpty { self.channels[subscription.channel] = nil }
    }

    /// Marks a session to be flushed at the end of the current batch.
    func markDirty(_ session: ClientSession) {
        if !session.isDirty {
            session.isDirty = true
            self.dirty.append(session)
        }
    }

    // MARK: Batches from the hub

    /// Applies `ops`, then `results` (the answers to publishes, kept apart by the hub so that
    /// they follow the publications of the same tick without being copied into one list), then
    /// flushes every session written to.
    func apply(_ ops: [FanoutOp], then results: [FanoutOp] = []) {
        self.eventLoop.assertInEventLoop()
        // By index: `for op in ops` copies each operation out (a retain and a release of every payload).
        for index in ops.indices { self.apply(ops, at: index) }
        for index in results.indices { self.apply(results, at: index) }
        self.flushDirty()
    }

    private func apply(_ ops: [FanoutOp], at index: Int) {
        switch ops[index] {
        case .publication(let name, let offset, let time, let message):
            guard let channel = self.channels[name] else { return }
            // Iterate over a snapshot: a delivery may end a subscription (gap, slow consumer).
            let subscribers = channel.subscribers
            for subscription in subscribers {
                subscription.session.deliver(message, offset: offset, subscription: subscription)
            }
            self.counters.deliveries += subscribers.count
            self.counters.bytesOut += subscribers.count * message.byteCount
            if time > 0, let metrics = self.metrics {
                let now = UInt64(max(0, NIODeadline.wallClockNanoseconds))
                if now > time { metrics.publishToDeliver.recordNanoseconds(Int64(now - time)) }
            }
        case .batch(let batch):
            guard let channel = self.channels[batch.channel] else { return }
            let combined = batch.combinedMessage(allocator: self.allocator)
            let subscribers = channel.subscribers
            for subscription in subscribers {
                subscription.session.deliver(batch, combined: combined, subscription: subscription)
            }
            self.counters.deliveries += subscribers.count * batch.parts.count
            self.counters.bytesOut += subscribers.count * combined.byteCount
            if let metrics = self.metrics {
                let now = UInt64(max(0, NIODeadline.wallClockNanoseconds))
                for part in batch.parts where part.time > 0 && now > part.time {
                    metrics.publishToDeliver.recordNanoseconds(Int64(now - part.time))
                }
            }
        case .push(let name, let message):
            guard let channel = self.channels[name] else { return }
            let subscribers = channel.subscribers
            for subscription in subscribers {
                subscription.session.deliver(message, offset: 0, subscription: subscription)
            }
        case .activate(let activation):
            guard let subscription = self.pending.removeValue(forKey: activation.id) else {
                // The session left before the subscription was ready.
                self.hub?.leave(channel: activation.channel, id: activation.id)
                return
            }
            subscription.session.activate(subscription, activation)
        case .reject(let id, let error):
            guard let subscription = self.pending.removeValue(forKey: id) else { return }
            subscription.session.rejectSubscription(subscription, error)
        case .unsubscribeChannel(let name, let code):
            guard let channel = self.channels[name] else { return }
            for subscription in channel.subscribers {
                subscription.session.serverUnsubscribe(subscription.channel, code)
            }
        case .disconnect(let client, let code):
            self.sessions[client]?.disconnect(code, push: true)
        case .unsubscribeClient(let client, let channel, let code):
            self.sessions[client]?.serverUnsubscribe(channel, code)
        case .publishResult(let completion):
            completion.run()
        }
    }

    func flushDirty() {
        guard !self.dirty.isEmpty else { return }
        for session in self.dirty {
            session.isDirty = false
            session.flush()
        }
        self.dirty.removeAll(keepingCapacity: true)
    }

    // MARK: Timers

    private func sweep() {
        let now = NIODeadline.now()
        for session in self.sessions.values {
            session.tick(now: now)
        }
        if !self.awaitingConnect.isEmpty {
            for session in Array(self.awaitingConnect.values) { session.tick(now: now) }
        }
        self.flushDirty()
        if let metrics = self.metrics { self.counters.flush(into: metrics) }
        if self.pollPresence.count > 0 || self.pollPresence.pollers > 0 { self.pollPresence.dropExpired(now: now) }
    }

    /// Asks up to `count` sessions here, chosen at random among those that hold a lasting
    /// connection (WebSocket, SSE) opened before `connectedBefore`, to move: a `disconnect` push
    /// and a close with `code` (rebalancing). Returns how many were asked. On the loop only.
    func askToMove(upTo count: Int, connectedBefore: NIODeadline, code: DisconnectCode) -> Int {
        guard count > 0 else { return 0 }
        var eligible = self.sessions.values.filter {
            $0.isConnected && !$0.output.transport.isCollected && $0.createdAt < connectedBefore
        }
        var asked = 0
        while asked < count, !eligible.isEmpty {
            eligible.swapAt(Int.random(in: eligible.indices), eligible.count - 1)
            eligible.removeLast().disconnect(code, push: true)
            asked += 1
        }
        self.flushDirty()
        return asked
    }

    /// Node stop: disconnects every session here now, those still before their `connect` too, and
    /// refuses every `connect` from then on; the future completes when the last connected one is gone.
    func closeEverySession(code: DisconnectCode) -> EventLoopFuture<Void> {
        self.eventLoop.flatSubmit {
            self.acceptsSessions = false
            for session in Array(self.awaitingConnect.values) { session.disconnect(code, push: true) }
            self.flushDirty()
            return self.drain(over: .zero, code: code)
        }
    }

    /// Disconnects every session here, spread over `window` (drain); the future completes when
    /// the last one is gone.
    func drain(over window: TimeAmount, code: DisconnectCode) -> EventLoopFuture<Void> {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.eventLoop.execute {
            let clients = Array(self.sessions.keys)
            guard !clients.isEmpty else { return promise.succeed() }
            if let earlier = self.drained { promise.futureResult.cascade(to: earlier) }
            self.drained = promise
            // Batches every 50 ms at most, spread evenly over the window.
            let maximumBatches = max(1, Int(window.nanoseconds / TimeAmount.milliseconds(50).nanoseconds))
            let batches = min(maximumBatches, clients.count)
            for batch in 0..<batches {
                let members = Array(clients[(clients.count * batch / batches)..<(clients.count * (batch + 1) / batches)])
                // Divided first: the window times the batch number could pass Int64.
                let delay = TimeAmount.nanoseconds(window.nanoseconds / Int64(batches) * Int64(batch))
                self.eventLoop.scheduleTask(in: delay) {
                    for client in members { self.sessions[client]?.disconnect(code, push: true) }
                    self.flushDirty()
                }
            }
        }
        return promise.futureResult
    }
}

/// Local subscribers of one channel on one loop.
final class LocalChannel {
    var subscribers: ContiguousArray<SessionSubscription> = []
}

/// One session's subscription to one channel.
final class SessionSubscription: Identifiable {
    enum State {
        /// Waiting for the hub.
        case joining
        /// Ready, but the reply is queued behind earlier replies: messages wait here. `replyOffset`
        /// is the position the reply reports.
        case awaitingReply(replyOffset: UInt64, held: [HeldMessage])
        case live
    }

    /// A message kept until the subscribe reply is written, with the offset it takes the
    /// subscriber to (0 for pushes without one).
    struct HeldMessage {
        var offset: UInt64
        var message: OutboundMessage
    }

    unowned let session: ClientSession
    let id: SubscriptionID
    let channel: String
    let options: NamespaceOptions
    var state: State = .joining
    /// Index in the local channel's subscriber array; -1 when not there.
    var index: Int = -1
    /// Offset of the last publication delivered (history channels); a lower or equal one is a duplicate.
    var lastOffset: UInt64 = 0
    /// Which reply slot answers the subscribe, and the command id it answers.
    var replySlot: UInt64 = 0
    var replyID: UInt32 = 0
    /// The epoch of the position, once the hub made the subscription (history channels).
    var epoch: String?
    /// The position the client asked to resume from (kept for the SSE resume id until the hub answers).
    var requestedSince: StreamPosition?
    /// While the reply and held messages are being written: the offset the client has been sent so
    /// far (for the SSE resume id, which must never be ahead of what the client was sent).
    var writtenOffset: UInt64?

    init(session: ClientSession, id: SubscriptionID, channel: String, options: NamespaceOptions) {
        self.session = session
        self.id = id
        self.channel = channel
        self.options = options
    }
}

extension NIODeadline {
    /// Wall-clock nanoseconds since 1970 (publication times cross processes, so not the monotonic clock).
    static var wallClockNanoseconds: Int64 {
        Int64(Date().timeIntervalSince1970 * 1e9)
    }
}
