import CoreMetrics
import Logging
import NIOCore
import SwitchboardBroker
import SwitchboardCore

/// A request to join a channel, from a session to the hub.
struct JoinRequest: Sendable {
    var id: SubscriptionID
    var loopIndex: Int
    var channel: String
    var since: StreamPosition?
    var options: NamespaceOptions
    var client: ClientInfo
}

/// The node's channel table: which event loops have subscribers of which
/// channel, the broker subscription of each channel, the race-free subscribe
/// with recovery, and the encoding of each publication into one frame.
///
/// Confined to one event loop, the one the broker delivers events on, so the
/// fan-out path takes no lock: a publication is encoded once here and handed
/// to each loop that has subscribers as one batch per tick.
final class Hub: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let broker: any Broker
    private let logger: Logger
    private let presenceTTL: Double
    private var fanouts: [LoopFanout] = []

    private var channels: [String: HubChannel] = [:]
    private var batcher = FanoutBatcher(loopCount: 0)
    /// Where each session is (for the server API and control messages).
    private var directory = SessionDirectory()
    private var presenceTimer: RepeatedTask?
    private var positionTimer: RepeatedTask?
    private var positionCheckQueue: [String] = []
    private var positionCheckRound = 0
    /// Channels whose broker position is compared per interval.
    static let positionChecksPerInterval = 256
    private let positionCheckInterval: TimeAmount
    /// Counters for `info` and metrics.
    private(set) var metrics = HubMetrics()
    private var reported = HubMetrics()
    private var gaugeTimer: RepeatedTask?
    /// Where figures go once a second (set before `start`).
    var metricsSink: NodeMetrics?
    private let allocator = ByteBufferAllocator()
    /// SSE commands forwarded to other nodes, waiting for their outcome.
    private var forwardedCommands: [UInt64: (promise: EventLoopPromise<SessionCommandOutcome>, timeout: Scheduled<Void>)] = [:]
    private var nextCorrelation: UInt64 = 0
    /// When presence entries are written and refreshed.
    private var presence: PresenceSchedule

    init(
        eventLoop: any EventLoop,
        broker: any Broker,
        presenceTTL: Double,
        positionCheckInterval: TimeAmount = .seconds(5),
        logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.broker = broker
        self.presenceTTL = presenceTTL
        self.presence = PresenceSchedule(ttl: presenceTTL)
        self.positionCheckInterval = positionCheckInterval
        self.logger = logger
    }

    /// Connects the hub to the per-loop fan-outs and starts taking broker events.
    func start(fanouts: [LoopFanout]) -> EventLoopFuture<Void> {
        self.eventLoop.submit {
            self.fanouts = fanouts
            self.batcher = FanoutBatcher(loopCount: fanouts.count)
            self.presenceTimer = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                self.refreshPresence()
            }
            self.positionTimer = self.eventLoop.scheduleRepeatedTask(
                initialDelay: self.positionCheckInterval,
                delay: self.positionCheckInterval
            ) { _ in self.checkPositions() }
            self.gaugeTimer = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
                self.reportMetrics()
            }
        }.flatMap {
            self.broker.start { [self] event in
                self.eventLoop.preconditionInEventLoop()
                self.handle(event)
            }
        }
    }

    func stop() {
        self.eventLoop.execute {
            self.presenceTimer?.cancel()
            self.presenceTimer = nil
            self.positionTimer?.cancel()
            self.positionTimer = nil
            self.gaugeTimer?.cancel()
            self.gaugeTimer = nil
        }
    }

    // MARK: Sessions

    func register(client: String, user: String, loopIndex: Int, transport: TransportName = .websocket) {
        self.eventLoop.execute {
            self.directory.register(client: client, user: user, loop: loopIndex, transport: transport)
        }
    }

    func unregister(client: String, user: String, transport: TransportName = .websocket) {
        self.eventLoop.execute {
            self.directory.unregister(client: client, user: user, transport: transport)
        }
    }

    // MARK: Subscribe

    func join(_ request: JoinRequest) {
        self.eventLoop.execute { self.joinOnLoop(request) }
    }

    private func joinOnLoop(_ request: JoinRequest) {
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
    private func subscribeAtBroker(_ name: String) {
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
    private func unsubscribeAtBroker(_ name: String) {
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

    private func readHistory(for request: JoinRequest) {
        guard request.options.keepsHistory else {
            return self.finishJoin(request, history: nil)
        }
        let query = HistoryQuery(
            channel: request.channel,
            sinceOffset: request.since?.offset,
            limit: request.since == nil ? 0 : -1
        )
        self.broker.history(query).hop(to: self.eventLoop).whenComplete { result in
            switch result {
            case .success(let history):
                self.finishJoin(request, history: history)
            case .failure(let error):
                self.logger.error("history read failed", metadata: ["channel": "\(request.channel)", "error": "\(error)"])
                guard let channel = self.channels[request.channel] else { return }
                channel.joins[request.id] = nil
                if channel.joins.isEmpty { channel.buffer = [] }
                self.enqueue(.reject(request.id, SwitchboardError(.internalError, "history unavailable")), loop: request.loopIndex)
                self.dropIfUnused(request.channel)
            }
        }
    }

    private func finishJoin(_ request: JoinRequest, history: HistoryResult?) {
        guard let channel = self.channels[request.channel], let join = channel.joins.removeValue(forKey: request.id) else { return }
        let buffered = channel.buffer[join.bufferStart...]
        if channel.joins.isEmpty { channel.buffer.removeAll(keepingCapacity: false) }
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
            let following = Set(plan.following)
            activation.following = buffered.filter { following.contains($0.offset) }.map { ($0.offset, $0.frame) }
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
            activation.following = buffered.map { ($0.offset, $0.frame) }
        }
        self.activate(request, activation: activation)
    }

    private func queuePresence(_ client: ClientInfo, channel: String) {
        guard self.presence.add(client, channel: channel) else { return }
        // One broker call per channel for everyone who joined within this tick.
        self.eventLoop.execute {
            for call in self.presence.flush() {
                _ = self.broker.addPresence(channel: call.channel, clients: call.clients, ttl: self.presenceTTL)
            }
        }
    }

    private func activate(_ request: JoinRequest, activation: SubscriptionActivation) {
        guard let channel = self.channels[request.channel] else { return }
        channel.members[request.id] = Member(loopIndex: request.loopIndex, client: request.client, options: request.options)
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
        self.eventLoop.execute {
            guard let channel = self.channels[name] else { return }
            if channel.joins.removeValue(forKey: id) != nil {
                // Live publications are kept only for joins in progress.
                if channel.joins.isEmpty { channel.buffer = [] }
                self.dropIfUnused(name)
                return
            }
            guard let member = channel.members.removeValue(forKey: id) else { return }
            channel.loopCounts[member.loopIndex] -= 1
            if member.options.presence {
                self.presence.cancel(client: member.client.client, channel: name)
                _ = self.broker.removePresence(channel: name, client: member.client.client)
            }
            if member.options.joinLeave {
                _ = self.broker.publishPresenceEvent(.leave(member.client), channel: name)
            }
            self.dropIfUnused(name)
        }
    }

    /// A channel nobody here wants any more leaves the broker; its record goes once nothing is in flight.
    private func dropIfUnused(_ name: String) {
        guard let channel = self.channels[name], channel.members.isEmpty, channel.joins.isEmpty else { return }
        if channel.link.release() == .unsubscribe {
            self.unsubscribeAtBroker(name)
        }
        if channel.link.isIdle {
            self.channels[name] = nil
        }
    }

    // MARK: Broker events

    /// Feeds an event as if the broker had delivered it (tests; on the hub's loop).
    func deliverForTesting(_ event: BrokerEvent) {
        self.handle(event)
    }

    private func handle(_ event: BrokerEvent) {
        switch event {
        case .publication(let name, let publication, let epoch):
            self.handlePublication(name, publication, epoch: epoch)
        case .presence(let name, let presenceEvent):
            guard let channel = self.channels[name] else { return }
            let frame = WebSocketFrameBuilder.frame(allocator: self.allocator) { buffer in
                buffer.writeStaticString("{\"channel\":")
                buffer.writeJSONString(name)
                switch presenceEvent {
                case .join(let info):
                    buffer.writeStaticString(",\"join\":")
                    buffer.writeClientInfo(info)
                case .leave(let info):
                    buffer.writeStaticString(",\"leave\":")
                    buffer.writeClientInfo(info)
                }
                buffer.writeInteger(UInt8(ascii: "}"))
            }
            self.broadcast(.push(channel: name, frame), to: channel)
        case .control(let message):
            self.handleControl(message)
        case .deliveryInterrupted:
            // Publications may have been missed while the broker link was down: refill every channel.
            self.logger.warning("broker delivery was interrupted; refilling channels from history")
            self.metrics.interruptions += 1
            for (name, channel) in self.channels where channel.link.isSubscribed {
                if channel.keepsHistory, let baseline = channel.sequencer.lastLive ?? channel.fastPosition, !baseline.epoch.isEmpty {
                    self.startRefill(name, from: baseline)
                } else if channel.keepsHistory {
                    self.insufficientState(name)
                }
            }
        }
    }

    // MARK: Ordered delivery, gaps and refill

    private func handlePublication(_ name: String, _ publication: Publication, epoch: String) {
        guard let channel = self.channels[name] else { return }
        if publication.offset > 0 {
            switch channel.sequencer.receive(offset: publication.offset, epoch: epoch) {
            case .deliver:
                if channel.fastPosition == nil || channel.fastPosition!.offset < publication.offset || channel.fastPosition!.epoch != epoch {
                    channel.fastPosition = channel.sequencer.lastLive
                }
            case .ignore:
                return  // delivered already (a broker repeat, or one read from history first)
            case .hold:
                channel.refillBuffer.append((publication, epoch))
                return
            case .refill(let last):
                self.metrics.gapsDetected += 1
                self.logger.info("gap in channel; refilling from history", metadata: [
                    "channel": "\(name)", "expected": "\(last.offset + 1)", "got": "\(publication.offset)",
                ])
                channel.refillBuffer = [(publication, epoch)]
                self.startRefill(name, from: last)
                return
            case .resync:
                // History was lost under us (broker data loss, expiry): everyone must learn it.
                self.logger.warning("channel epoch changed", metadata: ["channel": "\(name)"])
                self.insufficientState(name)
                channel.fastPosition = channel.sequencer.lastLive
                return
            }
        }
        let frame = WebSocketFrameBuilder.frame(allocator: self.allocator, capacity: publication.data.readableBytes + 96) {
            $0.writePublicationPush(channel: name, publication)
        }
        if !channel.joins.isEmpty {
            channel.buffer.append(BufferedPublication(offset: publication.offset, frame: frame))
        }
        self.broadcast(.frame(channel: name, offset: publication.offset, time: publication.time, frame), to: channel)
    }

    /// Reads what came after `baseline` and delivers it in order before anything newer; tells
    /// everyone (2500) when history no longer holds it.
    private func startRefill(_ name: String, from baseline: StreamPosition) {
        guard let channel = self.channels[name] else { return }
        channel.sequencer.beginRefill()
        let query = HistoryQuery(channel: name, sinceOffset: baseline.offset, limit: -1)
        self.broker.history(query).hop(to: self.eventLoop).whenComplete { result in
            guard let channel = self.channels[name], channel.sequencer.isRefilling else { return }
            let buffered = channel.refillBuffer
            channel.refillBuffer = []
            var missed: [Publication] = []
            var recovered = false
            if case .success(let history) = result, history.position.epoch == baseline.epoch {
                missed = history.publications
                let contiguous = missed.enumerated().allSatisfy { $0.element.offset == baseline.offset + 1 + UInt64($0.offset) }
                let reachesBuffer = buffered.first.map { first in
                    (missed.last?.offset ?? baseline.offset) + 1 >= first.0.offset
                } ?? true
                recovered = contiguous && reachesBuffer && history.position.offset >= (missed.last?.offset ?? baseline.offset)
            }
            channel.sequencer.finishRefill(baseline: baseline, recovered: recovered)
            if recovered {
                for publication in missed { self.handlePublication(name, publication, epoch: baseline.epoch) }
            } else {
                if case .failure(let error) = result {
                    self.logger.warning("refill failed", metadata: ["channel": "\(name)", "error": "\(error)"])
                }
                self.insufficientState(name)
            }
            for (publication, epoch) in buffered { self.handlePublication(name, publication, epoch: epoch) }
        }
    }

    /// Every local subscriber of the channel loses its subscription with 2500 and resubscribes with its position.
    private func insufficientState(_ name: String) {
        guard let channel = self.channels[name] else { return }
        self.metrics.insufficientState += 1
        self.broadcast(.unsubscribeChannel(channel: name, .insufficientState), to: channel)
    }

    /// Compares each channel's position at the broker with what was delivered here; a channel that
    /// stays behind for two checks in a row missed something (a silent broker link) and is refilled.
    private func checkPositions() {
        // A bounded number of channels per interval, round robin, so that many channels never
        // turn into a burst of broker calls that stalls this loop (the probe watches the link as a whole).
        var checked = 0
        while checked < Self.positionChecksPerInterval {
            if self.positionCheckQueue.isEmpty {
                guard self.positionCheckRound < 1 else { break }
                self.positionCheckQueue = Array(self.channels.keys)
                self.positionCheckRound += 1
                if self.positionCheckQueue.isEmpty { break }
            }
            let name = self.positionCheckQueue.removeLast()
            guard let channel = self.channels[name], channel.keepsHistory, channel.link.isSubscribed, !channel.sequencer.isRefilling,
                let last = channel.sequencer.lastLive
            else { continue }
            checked += 1
            self.broker.history(HistoryQuery(channel: name, limit: 0)).hop(to: self.eventLoop).whenSuccess { history in
                guard let channel = self.channels[name], !channel.sequencer.isRefilling, let current = channel.sequencer.lastLive else { return }
                if history.position.epoch != current.epoch {
                    if channel.suspectEpoch == history.position.epoch {
                        channel.suspectEpoch = nil
                        self.insufficientState(name)
                    } else {
                        channel.suspectEpoch = history.position.epoch
                    }
                    return
                }
                channel.suspectEpoch = nil
                if history.position.offset > current.offset {
                    if let suspect = channel.suspectTop, suspect <= history.position.offset, current.offset < suspect, current == last {
                        channel.suspectTop = nil
                        self.logger.warning("channel behind the broker; refilling", metadata: ["channel": "\(name)"])
                        self.startRefill(name, from: current)
                    } else {
                        channel.suspectTop = history.position.offset
                    }
                } else {
                    channel.suspectTop = nil
                }
            }
        }
        self.positionCheckRound = 0
    }

    private func broadcast(_ op: FanoutOp, to channel: HubChannel) {
        for (loop, count) in channel.loopCounts.enumerated() where count > 0 {
            self.enqueue(op, loop: loop)
        }
    }

    /// Sends commands POSTed here to the node holding the SSE session; completes with that
    /// node's outcome, or 503 when it does not answer within `timeout`.
    func forwardSessionCommands(
        session: String,
        commands: String,
        to node: String,
        from thisNode: String,
        timeout: TimeAmount = .seconds(5)
    ) -> EventLoopFuture<SessionCommandOutcome> {
        let promise = self.eventLoop.makePromise(of: SessionCommandOutcome.self)
        self.eventLoop.execute {
            self.nextCorrelation += 1
            let correlation = self.nextCorrelation
            let timer = self.eventLoop.scheduleTask(in: timeout) { () -> Void in
                guard let waiting = self.forwardedCommands.removeValue(forKey: correlation) else { return }
                waiting.promise.succeed(.rejected(status: 503, message: "the session's node did not answer"))
            }
            self.forwardedCommands[correlation] = (promise, timer)
            self.broker.sendControl(.sessionCommands(session: session, commands: commands, replyTo: thisNode, correlation: correlation), to: node)
                .hop(to: self.eventLoop).assumeIsolated().whenFailure { _ in
                    guard let waiting = self.forwardedCommands.removeValue(forKey: correlation) else { return }
                    waiting.timeout.cancel()
                    waiting.promise.succeed(.rejected(status: 503, message: "broker unavailable"))
                }
        }
        return promise.futureResult
    }

    private func handleControl(_ message: ControlMessage) {
        switch message {
        case .sessionCommands(let session, let commands, let replyTo, let correlation):
            let broker = self.broker
            let answer: @Sendable (SessionCommandOutcome) -> Void = { outcome in
                let result: ControlMessage
                switch outcome {
                case .accepted(let count):
                    result = .sessionCommandsResult(correlation: correlation, status: 202, accepted: count, message: "")
                case .rejected(let status, let message):
                    result = .sessionCommandsResult(correlation: correlation, status: status, accepted: 0, message: message)
                }
                _ = broker.sendControl(result, to: replyTo)
            }
            guard let id = EventStreamSessionID(Substring(session)), let loop = self.directory.loop(of: id.client), loop < self.fanouts.count else {
                return answer(.rejected(status: 404, message: "unknown session"))
            }
            let fanout = self.fanouts[loop]
            fanout.eventLoop.execute {
                answer(fanout.sessionCommands(client: id.client, secret: id.secret, body: ByteBuffer(string: commands)))
            }
        case .sessionCommandsResult(let correlation, let status, let accepted, let message):
            guard let waiting = self.forwardedCommands.removeValue(forKey: correlation) else { return }
            waiting.timeout.cancel()
            waiting.promise.succeed(status == 202 ? .accepted(accepted) : .rejected(status: status, message: message))
        case .disconnect(let client, let user, let code, let reason):
            for target in self.directory.sessions(client: client, user: user) {
                self.enqueue(.disconnect(client: target.client, DisconnectCode(code, reason)), loop: target.loop)
            }
        case .unsubscribe(let user, let channel):
            for target in self.directory.sessions(client: nil, user: user) {
                self.enqueue(.unsubscribeClient(client: target.client, channel: channel, .server), loop: target.loop)
            }
        }
    }

    // MARK: Batching

    private func enqueue(_ op: FanoutOp, loop: Int) {
        if self.batcher.enqueue(op, loop: loop) {
            // Runs after everything already queued on this loop: one batch per loop per tick.
            self.eventLoop.execute { self.flush() }
        }
    }

    private func flush() {
        for (index, ops) in self.batcher.take() {
            let fanout = self.fanouts[index]
            if fanout.eventLoop === self.eventLoop {
                fanout.apply(ops)
            } else {
                fanout.eventLoop.execute { fanout.apply(ops) }
            }
        }
    }

    private func reportMetrics() {
        guard let sink = self.metricsSink else { return }
        for transport in TransportName.allCases {
            sink.connections[transport.index].record(self.directory.countByTransport[transport.index])
        }
        sink.subscriptions.record(self.channels.values.reduce(0) { $0 + $1.members.count })
        sink.channels.record(self.channels.count)
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
    /// about every third of its TTL without a burst of broker calls.
    private func refreshPresence() {
        for name in self.presence.nextRefresh(channels: { Array(self.channels.keys) }) {
            guard let channel = self.channels[name] else { continue }
            let present = channel.members.values.compactMap { $0.options.presence ? $0.client : nil }
            for batch in PresenceSchedule.batches(present) {
                _ = self.broker.addPresence(channel: name, clients: batch, ttl: self.presenceTTL)
            }
        }
    }

    /// Figures for `info` and the registry.
    func statistics() -> EventLoopFuture<HubStatistics> {
        self.eventLoop.submit {
            HubStatistics(
                connections: self.directory.count,
                subscriptions: self.channels.values.reduce(0) { $0 + $1.members.count },
                channels: self.channels.count
            )
        }
    }

    /// Active channels with their local subscriber counts.
    func channelList() -> EventLoopFuture<[(name: String, subscribers: Int)]> {
        self.eventLoop.submit {
            self.channels.filter { !$0.value.members.isEmpty }.map { ($0.key, $0.value.members.count) }.sorted { $0.name < $1.name }
        }
    }

    /// Every connected client with its loop (for drain).
    func clients() -> EventLoopFuture<[(client: String, loop: Int)]> {
        self.eventLoop.submit { self.directory.loopByClient.map { ($0.key, $0.value) } }
    }
}

/// What the hub counts.
struct HubMetrics: Sendable {
    var gapsDetected = 0
    var insufficientState = 0
    var interruptions = 0
}

struct HubStatistics: Sendable {
    var connections: Int
    var subscriptions: Int
    var channels: Int
}

/// The hub's view of one channel.
///
/// A class, not a struct: a channel's member table is mutated on every
/// subscribe and unsubscribe, and a struct taken out of the dictionary would
/// copy the whole table each time (O(n²) to fill a channel).
final class HubChannel {
    var loopCounts: [Int]
    var members: [SubscriptionID: Member] = [:]
    var joins: [SubscriptionID: PendingJoin] = [:]
    /// Live publications kept while joins are in progress.
    var buffer: [BufferedPublication] = []
    /// The node's subscription to the channel at the broker.
    var link = BrokerSubscription()
    /// The newest position the hub knows; lets a subscribe without recovery skip the broker.
    var fastPosition: StreamPosition?
    /// The ordering rule: what is delivered, dropped, held or refilled.
    var sequencer = ChannelSequencer()
    var keepsHistory = false
    /// While missed publications are read from history, live ones wait here.
    var refillBuffer: [(Publication, String)] = []
    /// What the last position check saw when the broker was ahead.
    var suspectTop: UInt64?
    var suspectEpoch: String?

    init(loopCount: Int) {
        self.loopCounts = Array(repeating: 0, count: loopCount)
    }

    /// Forgets positions and refill state (the channel was not followed for a while).
    func resetSequencing() {
        self.fastPosition = nil
        self.sequencer.reset()
        self.keepsHistory = false
        self.refillBuffer = []
        self.suspectTop = nil
        self.suspectEpoch = nil
    }
}

struct Member {
    var loopIndex: Int
    var client: ClientInfo
    var options: NamespaceOptions
}

struct PendingJoin {
    var request: JoinRequest
    var bufferStart: Int
}

struct BufferedPublication {
    var offset: UInt64
    var frame: ByteBuffer
}
