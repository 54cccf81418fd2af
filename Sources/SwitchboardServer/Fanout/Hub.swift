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
/// with recovery, and the encoding of each publication into one message.
///
/// Confined to one event loop, the one the broker delivers events on, so the
/// fan-out path takes no lock: a publication is encoded once here and handed
/// to each loop that has subscribers as one batch per tick.
final class Hub: @unchecked Sendable {
    // @unchecked: state is touched only on `eventLoop` (public entry points hop there; handlers assert it).
    let eventLoop: any EventLoop
    let broker: any Broker
    let logger: Logger
    let presenceTTL: Double
    var fanouts: [LoopFanout] = []

    var channels: [String: HubChannel] = [:]
    var batcher = FanoutBatcher(loopCount: 0)
    /// Where each session is (for the server API and control messages).
    var directory = SessionDirectory()
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
    var gaugeTimer: RepeatedTask?
    /// Where figures go once a second (set before `start`).
    var metricsSink: NodeMetrics?
    let allocator = ByteBufferAllocator()
    /// SSE commands forwarded to other nodes, waiting for their outcome.
    var forwardedCommands: [UInt64: (promise: EventLoopPromise<SessionCommandOutcome>, timeout: Scheduled<Void>)] = [:]
    var nextCorrelation: UInt64 = 0
    /// When presence entries are written and refreshed.
    var presence: PresenceSchedule

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

    func joinOnLoop(_ request: JoinRequest) {
        self.eventLoop.assertInEventLoop()
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

    func finishJoin(_ request: JoinRequest, history: HistoryResult?) {
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
    }

    func queuePresence(_ client: ClientInfo, channel: String) {
        guard self.presence.add(client, channel: channel) else { return }
        // One broker call per channel for everyone who joined within this tick.
        self.eventLoop.execute {
            for call in self.presence.flush() {
                _ = self.broker.addPresence(channel: call.channel, clients: call.clients, ttl: self.presenceTTL)
            }
        }
    }

    func activate(_ request: JoinRequest, activation: SubscriptionActivation) {
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
        self.eventLoop.assertInEventLoop()
        switch event {
        case .publication(let name, let publication, let epoch):
            self.handlePublication(name, publication, epoch: epoch)
        case .presence(let name, let presenceEvent):
            guard let channel = self.channels[name] else { return }
            let message = OutboundMessage(allocator: self.allocator) { buffer in
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
            self.broadcast(.push(channel: name, message), to: channel)
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

    // MARK: Batching

    func enqueue(_ op: FanoutOp, loop: Int) {
        if self.batcher.enqueue(op, loop: loop) {
            // Runs after everything already queued on this loop: one batch per loop per tick.
            self.eventLoop.execute { self.flush() }
        }
    }

    func flush() {
        for (index, ops) in self.batcher.take() {
            let fanout = self.fanouts[index]
            if fanout.eventLoop === self.eventLoop {
                fanout.apply(ops)
            } else {
                fanout.eventLoop.execute { fanout.apply(ops) }
            }
        }
    }

    func reportMetrics() {
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
    func refreshPresence() {
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
