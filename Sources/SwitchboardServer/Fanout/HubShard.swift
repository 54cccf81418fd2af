import CoreMetrics
import Logging
import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// One event loop's share of the node's channel table: the channels whose
/// names hash to this shard (`ChannelShard`), which loops have subscribers of
/// each, their broker subscriptions, the race-free subscribe with recovery,
/// ordering and refill, presence writes, and the encoding of each publication
/// into one message.
///
/// Confined to `eventLoop` (one of the node's loops), with no lock: every
/// join, leave, publication, refill and presence batch of its channels runs
/// here. A publication from a session on this loop to a channel owned here is
/// handled without a hop (the memory broker is sharded by the same rule), and
/// each loop with subscribers gets the tick's work as one batch.
final class HubShard: @unchecked Sendable {
    // @unchecked: every `var` is touched only on `eventLoop` (`run` hops there).
    let eventLoop: any EventLoop
    let index: Int
    let broker: any Broker
    /// The broker's count of deliveries queued between loops (nil: the broker needs none).
    let backlog: DeliveryBacklog?
    let logger: Logger
    let presenceTTL: Double
    var fanouts: [LoopFanout] = []
    /// The node-wide part (metrics sink); set before `start`.
    weak var hub: Hub?

    var channels: [String: HubChannel] = [:]
    var batcher = FanoutBatcher(loopCount: 0)
    var presenceTimer: RepeatedTask?
    var positionTimer: RepeatedTask?
    var positionCheckQueue: [String] = []
    var positionCheckRound = 0
    /// Channels whose broker position is compared per interval.
    static let positionChecksPerInterval = 256
    let positionCheckInterval: TimeAmount
    /// Counters for `info` and metrics.
    var metrics = HubMetrics()
    var reported = HubMetrics()
    let allocator = ByteBufferAllocator()
    /// When presence entries are written and refreshed.
    var presence: PresenceSchedule
    /// Whether gathered presence changes have a write scheduled.
    var presenceWrites = PresenceWriteTimer.idle
    /// Presence reads at the broker, by channel: a request for a channel whose table is being read,
    /// with nothing written to it since, shares that read (one `/rpc` call asking `presenceStats`
    /// of one big channel 100 times makes one read). Entries only while their read is out.
    var presenceReads: [String: EventLoopFuture<[ClientInfo]>] = [:]

    /// The timer of the next presence write: none, one scheduled `PresenceSchedule.writeDelay`
    /// after the first change gathered since the last write, or none ever again once the shard
    /// stopped (changes are then written at once: nothing is left for a timer that never runs).
    enum PresenceWriteTimer {
        case idle
        case scheduled(Scheduled<Void>)
        case stopped
    }

    init(
        eventLoop: any EventLoop,
        index: Int,
        broker: any Broker,
        presenceTTL: Double,
        positionCheckInterval: TimeAmount,
        logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.index = index
        self.broker = broker
        self.backlog = broker.deliveryBacklog
        self.presenceTTL = presenceTTL
        self.presence = PresenceSchedule(ttl: presenceTTL)
        self.positionCheckInterval = positionCheckInterval
        self.logger = logger
    }

    /// Connects the shard to the per-loop fan-outs and starts its timers (on its loop).
    func start(fanouts: [LoopFanout]) -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            self.fanouts = fanouts
            self.batcher = FanoutBatcher(loopCount: fanouts.count)
            self.presenceTimer = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                self.refreshPresence()
                self.reportCounters()
            }
            self.positionTimer = self.eventLoop.scheduleRepeatedTask(
                initialDelay: self.positionCheckInterval,
                delay: self.positionCheckInterval
            ) { _ in self.checkPositions() }
        }
    }

    /// Stops the timers and hands the presence changes not yet written to the broker. The future
    /// completes once the broker has answered those writes (or failed them), so whoever stops the
    /// node shuts the broker and the loops down after them, not under them.
    func stop() -> EventLoopFuture<Void> {
        self.eventLoop.flatSubmit {
            if case .scheduled(let timer) = self.presenceWrites { timer.cancel() }
            self.presenceWrites = .stopped
            let written = self.writePresence()
            self.presenceTimer?.cancel()
            self.presenceTimer = nil
            self.positionTimer?.cancel()
            self.positionTimer = nil
            return EventLoopFuture.andAllComplete(written, on: self.eventLoop)
        }
    }

    /// Runs `body` on this shard's loop: at once when already there, else as one task.
    @inline(__always)
    func run(_ body: @escaping @Sendable () -> Void) {
        if self.eventLoop.inEventLoop {
            body()
        } else {
            self.eventLoop.execute(body)
        }
    }

    // MARK: Subscribe

    /// A session joins a channel owned here (on this shard's loop).
    func join(_ request: JoinRequest) {
        let name = request.channel
        let channel: HubChannel
        if let existing = self.channels[name] {
            channel = existing
        } else {
            channel = HubChannel(loopCount: self.fanouts.count)
            self.channels[name] = channel
        }
        if channel.link.isSubscribed, request.since == nil, let position = channel.fastPosition {
            // Already live here and nothing to recover: answer from what the hub knows.
            self.activate(request, activation: SubscriptionActivation(
                id: request.id, channel: name,
                position: request.options.keepsHistory ? position : nil,
                recovered: nil, publications: [], following: []))
            return
        }
        channel.joins[request.id] = PendingJoin(request: request, bufferStart: channel.buffer.count)
        switch channel.link.want() {
        case .subscribe:
            self.subscribeAtBroker(name)
        case .none where channel.link.isSubscribed:
            self.readHistory(for: request)
        default:
            break  // the join goes on when the broker subscription in flight completes
        }
    }

    /// Sends the broker subscribe for a channel and follows its state machine when it completes.
    func subscribeAtBroker(_ name: String) {
        self.broker.subscribe(channel: name).hop(to: self.eventLoop).whenComplete { result in
            guard let channel = self.channels[name] else { return }
            switch result {
            case .success:
                switch channel.link.subscribeSucceeded() {
                case .joinWaiting:
                    for join in channel.joins.values { self.readHistory(for: join.request) }
                case .unsubscribe:
                    // Everyone left while the subscribe was in flight.
                    self.unsubscribeAtBroker(name)
                default:
                    break
                }
            case .failure(let error):
                self.logger.error("broker subscribe failed", metadata: ["channel": "\(name)", "error": "\(error)"])
                _ = channel.link.subscribeFailed()
                let joins = channel.joins.values
                channel.joins = [:]
                channel.buffer = []
                for join in joins {
                    self.enqueue(.reject(join.request.id, SwitchboardError(.internalError, "broker unavailable")), loop: join.request.loopIndex)
                }
                self.dropIfUnused(name)
            }
        }
    }

    /// Sends the broker unsubscribe; a subscriber that came meanwhile subscribes again after it.
    func unsubscribeAtBroker(_ name: String) {
        self.broker.unsubscribe(channel: name).hop(to: self.eventLoop).whenComplete { _ in
            guard let channel = self.channels[name] else { return }
            switch channel.link.unsubscribeCompleted() {
            case .subscribe:
                // What the hub knew of the channel is stale after a time unsubscribed.
                channel.resetSequencing()
                self.subscribeAtBroker(name)
            default:
                self.dropIfUnused(name)
            }
        }
    }

    func readHistory(for request: JoinRequest) {
        guard request.options.keepsHistory else {
            return self.finishJoin(request, history: nil)
        }
        if let channel = self.channels[request.channel], var join = channel.joins[request.id] {
            // What happens from now on, this read may not show.
            join.reads += 1
            join.read = .current
            join.bufferStart = channel.buffer.count
            channel.joins[request.id] = join
        }
        let query = HistoryQuery(
            channel: request.channel,
            sinceOffset: request.since?.offset,
            limit: request.since == nil ? 0 : -1,
            maximumBytes: request.since == nil ? nil : request.recoveryBytes
        )
        self.broker.history(query).hop(to: self.eventLoop).whenComplete { result in
            switch result {
            case .success(let history):
                if let charge = request.historyCharge, request.since != nil {
                    let read = history.publications.reduce(0) { $0 &+ $1.data.readableBytes }
                    // A read that stopped at the room went past it: all of it is counted.
                    charge.charge(history.truncated ? max(read, request.recoveryBytes ?? 0) : read)
                }
                self.finishJoin(request, history: history)
            case .failure(let error):
                self.logger.error("history read failed", metadata: ["channel": "\(request.channel)", "error": "\(error)"])
                guard let channel = self.channels[request.channel] else { return }
                channel.endJoin(request.id)
                self.enqueue(.reject(request.id, SwitchboardError(.internalError, "history unavailable")), loop: request.loopIndex)
                self.dropIfUnused(request.channel)
            }
        }
    }

    func finishJoin(_ request: JoinRequest, history: HistoryResult?) {
        guard let channel = self.channels[request.channel], let join = channel.joins[request.id] else { return }
        if join.left {
            // Left while its read was out: nothing is joined; the answer tells the session the read is over.
            channel.endJoin(request.id)
            self.enqueue(.reject(request.id, ClientSession.endedBeforeMade), loop: request.loopIndex)
            self.dropIfUnused(request.channel)
            return
        }
        let buffered = channel.buffer[join.bufferStart...]
        let settled = history.map { Self.liveFollows(buffered, top: $0.position) && join.read == .current } ?? true
        if !settled && join.reads < Self.maximumJoinReads {
            // The channel moved on in a way this answer cannot show (its epoch changed, the broker
            // lost publications or its link was interrupted, or live publications skip past the
            // answer's top): answering from it could leave a silent gap. Read again.
            return self.readHistory(for: request)
        }
        channel.endJoin(request.id)
        var activation = SubscriptionActivation(
            id: request.id, channel: request.channel, position: nil, recovered: nil, publications: [], following: [])
        if let history {
            let plan = RecoveryPlan(
                since: request.since,
                top: history.position,
                historyOffsets: history.publications.map(\.offset),
                bufferedOffsets: buffered.map(\.offset)
            )
            activation.position = plan.position
            activation.recovered = plan.recovered
            activation.publications = plan.recovered == true ? history.publications : []
            if history.truncated, let since = request.since {
                // The read stopped at the reply's room: recovered, as far as it goes, when what it
                // holds follows on from `since` (the session decides whether its reply can page).
                let end = StreamPosition(offset: history.publications.last?.offset ?? since.offset, epoch: history.position.epoch)
                let prefix = RecoveryPlan(since: since, top: end, historyOffsets: history.publications.map(\.offset), bufferedOffsets: [])
                if prefix.recovered == true, !history.publications.isEmpty {
                    activation.recovered = true
                    activation.publications = history.publications
                    activation.truncated = true
                }
            }
            let following = Set(plan.following)
            activation.following = buffered.filter { following.contains($0.offset) }.map { ($0.offset, $0.message) }
            if channel.fastPosition.map({ $0.offset < history.position.offset || $0.epoch != history.position.epoch }) ?? true {
                channel.fastPosition = history.position
            }
            if let last = activation.following.last, channel.fastPosition!.offset < last.offset {
                channel.fastPosition!.offset = last.offset
            }
            // Everyone here is at or past this position: the baseline for gap detection.
            channel.sequencer.adoptBaseline(
                activation.following.last.map { StreamPosition(offset: $0.offset, epoch: history.position.epoch) } ?? history.position)
            channel.keepsHistory = true
        } else {
            channel.fastPosition = StreamPosition(offset: 0, epoch: "")
            activation.following = buffered.map { ($0.offset, $0.message) }
        }
        self.activate(request, activation: activation)
        if !settled {
            // Still unsettled after every read allowed: everyone here resubscribes (2500), the new
            // subscriber with them, rather than anyone staying on a position that may not hold.
            self.insufficientState(request.channel)
        }
    }

    /// History reads one join may take before it is answered with a 2500 instead.
    static let maximumJoinReads = 3

    /// Whether the live publications buffered since a join's history read follow on from the read's
    /// `top` without a hole and in its epoch (those at or below `top` are in the history already).
    static func liveFollows(_ buffered: ArraySlice<BufferedPublication>, top: StreamPosition) -> Bool {
        var next = top.offset &+ 1
        for publication in buffered {
            guard publication.epoch == top.epoch || publication.offset == 0 else { return false }
            if publication.offset == 0 || publication.offset < next { continue }
            guard publication.offset == next else { return false }
            next &+= 1
        }
        return true
    }

    func queuePresence(_ client: ClientInfo, channel: String) {
        self.presence.add(client, channel: channel)
        self.schedulePresenceWrite()
    }

    /// Writes the gathered presence changes `PresenceSchedule.writeDelay` from now (one call per
    /// channel for everyone who joined or left by then), unless a write is scheduled already.
    private func schedulePresenceWrite() {
        switch self.presenceWrites {
        case .idle:
            self.presenceWrites = .scheduled(
                self.eventLoop.scheduleTask(in: PresenceSchedule.writeDelay) {
                    self.presenceWrites = .idle
                    self.writePresence()
                })
        case .scheduled:
            break
        case .stopped:
            self.writePresence()
        }
    }

    /// Sends every gathered presence change to the broker; the futures are its answers.
    @discardableResult
    func writePresence() -> [EventLoopFuture<Void>] {
        self.presence.takeWrites().map { self.send($0) }
    }

    @discardableResult
    private func send(_ write: PresenceSchedule.Write) -> EventLoopFuture<Void> {
        switch write {
        case .add(let channel, let clients):
            self.broker.addPresence(channel: channel, clients: clients, ttl: self.presenceTTL)
        case .remove(let channel, let clients):
            self.broker.removePresence(channel: channel, clients: clients)
        }
    }

    /// The clients present in `channel` (on this shard's loop), after this shard's changes to it
    /// not yet written: the broker keeps one channel's calls in order, so a client that just
    /// joined sees itself.
    func presence(channel: String) -> EventLoopFuture<[ClientInfo]> {
        let writes = self.presence.takeWrites(channel: channel)
        // A read started before these writes would not show them (a client reads its own join).
        if writes.isEmpty, let shared = self.presenceReads[channel] { return shared }
        for write in writes { self.send(write) }
        let read = self.broker.presence(channel: channel)
        self.presenceReads[channel] = read
        read.hop(to: self.eventLoop).whenComplete { _ in
            if self.presenceReads[channel] === read { self.presenceReads[channel] = nil }
        }
        return read
    }

    func activate(_ request: JoinRequest, activation: SubscriptionActivation) {
        guard let channel = self.channels[request.channel] else { return }
        channel.members[request.id] = Member(
            loopIndex: request.loopIndex, client: request.client, presence: request.options.presence, joinLeave: request.options.joinLeave)
        channel.loopCounts[request.loopIndex] += 1
        self.enqueue(.activate(activation), loop: request.loopIndex)
        if request.options.presence {
            self.queuePresence(request.client, channel: request.channel)
        }
        if request.options.joinLeave {
            _ = self.broker.publishPresenceEvent(.join(request.client), channel: request.channel)
        }
    }

    /// A session left a channel (unsubscribe, disconnect, or an activation that found the session gone).
    func leave(channel name: String, id: SubscriptionID) {
        guard let channel = self.channels[name] else { return }
        if var join = channel.joins[id] {
            // Every join is answered, a left one too (`.reject`, which finds no subscriber): a
            // session counts its recovering reads until the hub says each is over.
            if join.reads > 0 {
                // Its history read is at the broker: answered when the read returns, not joined.
                join.left = true
                channel.joins[id] = join
                return
            }
            // Live publications are kept only for joins in progress.
            channel.endJoin(id)
            self.enqueue(.reject(id, ClientSession.endedBeforeMade), loop: join.request.loopIndex)
            self.dropIfUnused(name)
            return
        }
        guard let member = channel.members.removeValue(forKey: id) else { return }
        channel.loopCounts[member.loopIndex] -= 1
        if member.presence {
            self.presence.remove(client: member.client.client, channel: name)
            self.schedulePresenceWrite()
        }
        if member.joinLeave {
            _ = self.broker.publishPresenceEvent(.leave(member.client), channel: name)
        }
        self.dropIfUnused(name)
    }

    /// A channel nobody here wants any more leaves the broker; its record goes once nothing is in flight.
    func dropIfUnused(_ name: String) {
        guard let channel = self.channels[name], channel.members.isEmpty, channel.joins.isEmpty else { return }
        if channel.link.release() == .unsubscribe {
            self.unsubscribeAtBroker(name)
        }
        if channel.link.isIdle {
            self.channels[name] = nil
        }
    }

    // MARK: Broker events

    func handle(_ event: BrokerEvent) {
        switch event {
        case .publication(let name, let publication, let epoch):
            self.handlePublication(name, publication, epoch: epoch)
        case .presence(let name, let presenceEvent):
            guard let channel = self.channels[name] else { return }
            let message = OutboundMessage(allocator: self.allocator) { buffer in
                buffer.writeJSONObject { push in
                    push.field("channel", string: name)
                    switch presenceEvent {
                    case .join(let info): push.field("join") { $0.writeClientInfo(info) }
                    case .leave(let info): push.field("leave") { $0.writeClientInfo(info) }
                    }
                }
            }
            self.broadcast(.push(channel: name, message), to: channel)
        case .control:
            break  // the hub's, on its home loop
        case .deliveryInterrupted:
            // Publications may have been missed while the broker link was down: refill every channel.
            if self.index == 0 {
                // Every shard hears it; one counts and logs it.
                self.logger.warning("broker delivery was interrupted; refilling channels from history")
                self.metrics.interruptions += 1
            }
            for (name, channel) in self.channels where channel.link.isSubscribed {
                // A join whose history read is under way may have been answered before what was missed.
                channel.markJoinReadsStale()
                if channel.keepsHistory, let baseline = channel.sequencer.lastLive ?? channel.fastPosition, !baseline.epoch.isEmpty {
                    self.startRefill(name, from: baseline)
                } else if channel.keepsHistory {
                    self.insufficientState(name)
                }
            }
        }
    }

    // MARK: Batching

    func enqueue(_ op: FanoutOp, loop: Int) {
        if self.batcher.enqueue(op, loop: loop) {
            // Runs after everything already queued on this loop: one batch per loop per tick.
            self.eventLoop.execute { self.flush() }
        }
    }

    func flush() {
        for (index, ops, results) in self.batcher.take() {
            let fanout = self.fanouts[index]
            if fanout.eventLoop === self.eventLoop {
                fanout.apply(ops, then: results)
            } else if let backlog = self.backlog {
                // Counted until the loop has run it: a network broker reads no more while loops are behind.
                let weight = FanoutOp.weight(of: ops) + results.count * FanoutOp.baseWeight
                backlog.add(weight)
                fanout.eventLoop.execute {
                    fanout.apply(ops, then: results)
                    backlog.remove(weight)
                }
            } else {
                fanout.eventLoop.execute { fanout.apply(ops, then: results) }
            }
        }
    }

    /// Adds what this shard counted since the last report to the node's metrics.
    func reportCounters() {
        guard let sink = self.hub?.metricsSink else { return }
        let delta = (
            gaps: self.metrics.gapsDetected - self.reported.gapsDetected,
            insufficient: self.metrics.insufficientState - self.reported.insufficientState,
            interruptions: self.metrics.interruptions - self.reported.interruptions
        )
        if delta.gaps > 0 { sink.gaps.increment(by: delta.gaps) }
        if delta.insufficient > 0 { sink.insufficientState.increment(by: delta.insufficient) }
        if delta.interruptions > 0 { sink.brokerInterruptions.increment(by: delta.interruptions) }
        self.reported = self.metrics
    }

    // MARK: Presence refresh and figures

    /// Refreshes presence entries a slice at a time (every second), so each entry is refreshed
    /// about every third of its TTL without a burst of broker calls, and without holding more
    /// than a slice of entries in memory: a big channel is refreshed a part per tick.
    func refreshPresence() {
        let parts = self.presence.nextRefresh(channels: { self.channels.lazy.map { ($0.key, $0.value.members.count) } })
        for part in parts {
            guard let channel = self.channels[part.channel] else { continue }
            var batch: [ClientInfo] = []
            batch.reserveCapacity(min(PresenceSchedule.batchSize, channel.members.count))
            for (id, member) in channel.members where member.presence && part.contains(id) {
                batch.append(member.client)
                if batch.count == PresenceSchedule.batchSize {
                    _ = self.broker.addPresence(channel: part.channel, clients: batch, ttl: self.presenceTTL)
                    batch.removeAll(keepingCapacity: true)
                }
            }
            if !batch.isEmpty {
                _ = self.broker.addPresence(channel: part.channel, clients: batch, ttl: self.presenceTTL)
            }
        }
    }

    /// This shard's subscriptions and channels (for `info`, the registry and gauges).
    func figures() -> EventLoopFuture<(subscriptions: Int, channels: Int)> {
        self.eventLoop.submit {
            (self.channels.values.reduce(0) { $0 + $1.members.count }, self.channels.count)
        }
    }

    /// Active channels here with their local subscriber counts.
    func channelList() -> EventLoopFuture<[(name: String, subscribers: Int)]> {
        self.eventLoop.submit {
            self.channels.filter { !$0.value.members.isEmpty }.map { ($0.key, $0.value.members.count) }
        }
    }
}

