import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import SwitchboardBroker
import SwitchboardCore

/// The protocol state of one client connection: connect, subscriptions with
/// their positions, commands and their replies in order, pings, and every
/// way a connection ends.
///
/// The same session serves every transport (`SessionTransport`): over
/// WebSocket it is a channel handler after `WebSocketFrameHandler`; over SSE a
/// channel handler after the HTTP handler, fed commands by POST; for a
/// long-poll or an `/rpc` call it lives only as long as one HTTP answer. It
/// lives on one event loop and is touched nowhere else.
final class ClientSession: ChannelInboundHandler {
    typealias InboundIn = WebSocketMessage
    typealias OutboundOut = ByteBuffer

    private enum State {
        case awaitingConnect
        case connected
        case closed
    }

    private let node: NodeContext
    private let fanout: LoopFanout
    let transport: SessionTransport
    /// The secret half of an SSE session id (empty for other transports).
    private var sessionSecret = ""
    private var receivingCommands = false
    private var context: ChannelHandlerContext?
    private var state: State = .awaitingConnect
    private var clientInfo = ClientInfo(client: "", user: "")
    private var subscriptions = SessionSubscriptions()
    /// Replies in command order.
    private var replies = ReplyQueue<ReplySlot>()
    private var connectPending: ConnectAggregate?
    private var hasUnflushedWrites = false
    var isDirty = false

    /// Connect, ping, pong and token deadlines.
    private var liveness: SessionLiveness

    private static let parser = JSONParser(maximumDepth: 64, maximumValues: 50_000)

    init(node: NodeContext, fanout: LoopFanout, transport: SessionTransport = .webSocket) {
        self.node = node
        self.fanout = fanout
        self.transport = transport
        self.liveness = SessionLiveness(now: .now())
    }

    // MARK: Transports other than WebSocket

    /// Runs the `connect` an SSE stream or a poll implies (command id 1).
    func start(_ params: ConnectParams) {
        guard self.state == .awaitingConnect else { return }
        self.connect(id: 1, params)
        self.flush()
    }

    /// Whether `secret` names this SSE session (compared in constant time).
    func matchesSession(secret: String) -> Bool {
        guard self.transport.isEventStream, self.state == .connected else { return false }
        let a = Array(self.sessionSecret.utf8)
        let b = Array(secret.utf8)
        guard a.count == b.count, !a.isEmpty else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }

    /// Reads the commands of an HTTP body (SSE POST, `/rpc`): one or more JSON objects, one per line.
    /// Every one is checked before any runs, so a bad body is refused whole and costs nothing.
    static func parseCommands(_ body: ByteBuffer, allowConnect: Bool, maximumCommands: Int) -> Result<[ClientMessage], HTTPCommandError> {
        let values: [JSONValue]
        do {
            values = try Self.parser.parseSequence(body.readableBytesView)
        } catch {
            return .failure(HTTPCommandError(message: "malformed JSON: \(error.message)"))
        }
        guard !values.isEmpty else { return .failure(HTTPCommandError(message: "no commands in the body")) }
        guard values.count <= maximumCommands else {
            return .failure(HTTPCommandError(message: "at most \(maximumCommands) commands per request", tooMany: true))
        }
        var messages: [ClientMessage] = []
        messages.reserveCapacity(values.count)
        for value in values {
            do {
                let message = try ClientMessage.parse(value)
                if !allowConnect, case .command(let command) = message, case .connect = command.method {
                    return .failure(HTTPCommandError(message: "the stream is connected already; connect is not a POST command"))
                }
                messages.append(message)
            } catch {
                return .failure(HTTPCommandError(message: "bad request: \(error.message)"))
            }
        }
        return .success(messages)
    }

    /// Commands that arrived by HTTP (SSE POST), checked and run.
    func receiveCommands(_ body: ByteBuffer) -> SessionCommandOutcome {
        guard self.state == .connected else { return .rejected(status: 404, message: "unknown session") }
        switch Self.parseCommands(body, allowConnect: false, maximumCommands: self.node.configuration.maxCommandsPerRequest) {
        case .failure(let error):
            return .rejected(status: error.tooMany ? 413 : 400, message: error.message)
        case .success(let messages):
            self.run(messages)
            return .accepted(messages.count)
        }
    }

    /// Runs commands that were checked already (by `parseCommands`).
    func run(_ messages: [ClientMessage]) {
        // Replies may complete while later commands are still being read (a broker on this
        // loop answers at once): an `/rpc` answer waits until every command has its slot.
        self.receivingCommands = true
        for message in messages {
            guard self.state == .connected else { break }
            self.handle(message)
        }
        self.receivingCommands = false
        self.flush()
        if case .collect(let collector) = self.transport {
            collector.isReady = true
            self.finishCollectingIfDue(collector)
        }
    }

    /// The poll's time is up: answer with what there is, or, while the subscriptions are still
    /// being made, as soon as they are (so even a zero timeout gets the positions).
    func collectTimedOut() {
        guard case .collect(let collector) = self.transport else { return }
        collector.timedOut = true
        self.finishCollectingIfDue(collector)
    }

    /// Sends a collecting session's answer now and ends the session.
    func finishCollecting() {
        guard case .collect(let collector) = self.transport else { return }
        collector.complete(allocator: self.allocator)
        self.close()
    }

    /// Ends a collecting session without an answer (its HTTP connection went away).
    func abandon() {
        if case .collect(let collector) = self.transport { collector.abandon() }
        self.close()
    }

    private func finishCollectingIfDue(_ collector: ResponseCollector) {
        guard collector.isReady, !collector.isCompleted, !self.receivingCommands else { return }
        switch collector.purpose {
        case .poll:
            if !collector.objects.isEmpty || collector.timedOut { self.finishCollecting() }
        case .rpc:
            if (self.repliesAreDone && self.connectPending == nil) || collector.timedOut { self.finishCollecting() }
        }
    }

    /// A poll's connect result as poll objects: missed publications, or the position to go on from.
    private func collectConnectResults(_ aggregate: ConnectAggregate, into collector: ResponseCollector) {
        for result in aggregate.results {
            var object = self.allocator.buffer(capacity: 128)
            switch result.outcome {
            case .success(let activation):
                var position = activation.position
                if activation.recovered == true {
                    // As many as fit in the answer; then the position of the last one that did,
                    // so the client's next poll goes on from there and nothing is lost.
                    var delivered: UInt64?
                    for publication in activation.publications {
                        var pub = self.allocator.buffer(capacity: 64 + publication.data.readableBytes)
                        pub.writePublicationPush(channel: result.channel, publication)
                        guard collector.append(pub) else { break }
                        delivered = publication.offset
                    }
                    if delivered == activation.publications.last?.offset { continue }
                    if let delivered, let epoch = position?.epoch {
                        position = StreamPosition(offset: delivered, epoch: epoch)
                    } else if let since = self.subscriptions[result.channel]?.requestedSince {
                        position = since
                    }
                }
                guard let position else { continue }  // no history: nothing to carry
                object.writeStaticString("{\"channel\":")
                object.writeJSONString(result.channel)
                object.writeStaticString(",\"position\":{\"offset\":")
                object.writeDecimal(position.offset)
                object.writeStaticString(",\"epoch\":")
                object.writeJSONString(position.epoch)
                if activation.recovered == false { object.writeStaticString(",\"recovered\":false") }
                object.writeStaticString("}}")
            case .failure(let error):
                object.writeStaticString("{\"channel\":")
                object.writeJSONString(result.channel)
                object.writeStaticString(",\"error\":")
                ResultWriter.writeError(&object, error)
                object.writeInteger(UInt8(ascii: "}"))
            }
            collector.appendPosition(object)
        }
    }

    /// The SSE event id: every subscription's position now (see `ResumeID`).
    private var resumeID: String {
        var subs: [(channel: String, position: StreamPosition?)] = []
        subs.reserveCapacity(self.subscriptions.count)
        for subscription in self.subscriptions.values {
            let channel = subscription.channel
            if let epoch = subscription.epoch {
                subs.append((channel, StreamPosition(offset: subscription.lastOffset, epoch: epoch)))
            } else {
                subs.append((channel, subscription.requestedSince))
            }
        }
        subs.sort { $0.channel < $1.channel }
        return ResumeID.encode(subs)
    }

    /// One SSE event holding the JSON of a frame, with the session's current resume id.
    private func eventStreamEvent(_ frame: ByteBuffer) -> ByteBuffer {
        var payload = WebSocketFrameBuilder.payload(of: frame)
        let id = self.resumeID
        var event = self.allocator.buffer(capacity: payload.readableBytes + id.utf8.count + 16)
        event.writeStaticString("data: ")
        event.writeBuffer(&payload)
        event.writeStaticString("\nid: ")
        event.writeString(id)
        event.writeStaticString("\n\n")
        return event
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The context holds its handler for good: keeping it here would keep both (and the
        // pipeline) alive after the connection ends.
        self.close()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.state != .closed else { return }
        let message = Self.unwrapInboundIn(data)
        guard message.isText else { return self.disconnect(.unsupportedData, push: false) }
        self.fanout.counters.bytesIn += message.data.readableBytes
        self.liveness.didReceive()
        let values: [JSONValue]
        do {
            values = try message.data.withUnsafeReadableBytes { bytes throws(JSONParser.Error) in
                try Self.parser.parseSequence(UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count))
            }
        } catch {
            return self.disconnect(.badRequest("malformed JSON"), push: false)
        }
        for value in values {
            guard self.state != .closed else { return }
            let parsed: ClientMessage
            do {
                parsed = try ClientMessage.parse(value)
            } catch {
                return self.disconnect(.badRequest("bad request: \(error.message)"), push: false)
            }
            self.handle(parsed)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable, self.state != .closed {
            self.node.logger.debug("slow consumer", metadata: ["client": "\(self.clientInfo.client)"])
            self.fanout.counters.slowConsumers += 1
            self.disconnect(.slowConsumer, push: false)
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is WebSocketClosing {
            self.close()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.close()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.close()
        context.close(promise: nil)
    }

    // MARK: Commands

    private func handle(_ message: ClientMessage) {
        switch message {
        case .pong:
            return
        case .invalid(let id, let error):
            guard self.state == .connected else { return self.disconnect(.badRequest, push: false) }
            self.reply(id: id, error: error)
        case .command(let command):
            if case .connect(let params) = command.method {
                guard self.state == .awaitingConnect else { return self.reply(id: command.id, error: .badRequest("already connected")) }
                return self.connect(id: command.id, params)
            }
            guard self.state == .connected else { return self.disconnect(.badRequest("command before connect"), push: false) }
            switch command.method {
            case .connect:
                break
            case .subscribe, .unsubscribe:
                if case .collect = self.transport {
                    return self.reply(id: command.id, error: .badRequest("follow channels with POST /poll"))
                }
                if case .subscribe(let params) = command.method {
                    self.subscribe(id: command.id, params)
                } else if case .unsubscribe(let channel) = command.method {
                    self.unsubscribe(channel)
                    self.reply(id: command.id) { $0.writeStaticString("{}") }
                }
            case .publish(let params):
                self.publish(id: command.id, params)
            case .presence(let channel):
                self.presence(id: command.id, channel: channel, statsOnly: false)
            case .presenceStats(let channel):
                self.presence(id: command.id, channel: channel, statsOnly: true)
            case .history(let params):
                self.history(id: command.id, params)
            case .ping:
                self.reply(id: command.id) { $0.writeStaticString("{}") }
            case .unknown:
                self.reply(id: command.id, error: .methodNotFound)
            }
        }
    }

    private func connect(id: UInt32, _ params: ConnectParams) {
        var user = ""
        var info: JSONValue?
        var tokenDeadline: NIODeadline?
        if let token = params.token {
            guard let verifier = self.node.tokenVerifier else { return self.disconnect(.invalidToken, push: false) }
            do {
                let claims = try verifier.verify(token)
                user = claims.user
                info = claims.info
                if let exp = claims.expiresAt {
                    tokenDeadline = Self.deadline(expiresAt: exp, now: Date().timeIntervalSince1970)
                }
            } catch {
                return self.disconnect(error == .expired ? .tokenExpired : .invalidToken, push: false)
            }
        }
        let client = self.fanout.makeClientID(node: self.node.nodeID)
        self.clientInfo = ClientInfo(client: client, user: user, info: info)
        if self.transport.isEventStream {
            var generator = SystemRandomNumberGenerator()
            self.sessionSecret = (0..<2).map { _ in
                let hex = String(generator.next() as UInt64, radix: 16)
                return String(repeating: "0", count: 16 - hex.count) + hex
            }.joined()
        }
        self.state = .connected
        self.liveness.didConnect(tokenDeadline: tokenDeadline)
        self.fanout.add(self, client: client)
        self.node.hub.register(client: client, user: user, loopIndex: self.fanout.index, transport: self.transport.name)
        let slot = self.reserveReply()
        let aggregate = ConnectAggregate(id: id, slot: slot, remaining: 0)
        var subscriptions: [SessionSubscription] = []
        for sub in params.subs {
            do {
                try ChannelName.validate(sub.channel)
                subscriptions.append(try self.startSubscription(channel: sub.channel, since: sub.since, slot: slot))
                aggregate.remaining += 1
            } catch {
                aggregate.results.append((sub.channel, .failure(error)))
            }
        }
        self.connectPending = aggregate
        for subscription in subscriptions { self.requestJoin(subscription, since: params.subs.first { $0.channel == subscription.channel }?.since) }
        self.finishConnectIfReady()
    }

    private func finishConnectIfReady() {
        guard let aggregate = self.connectPending, aggregate.remaining == 0 else { return }
        self.connectPending = nil
        if case .collect(let collector) = self.transport {
            if collector.purpose == .poll {
                self.collectConnectResults(aggregate, into: collector)
                collector.isReady = true  // an `/rpc` call is ready once its commands ran
                self.hasUnflushedWrites = true  // the next flush decides whether to answer
            }
            self.completeReply(aggregate.slot, ByteBuffer(), goLive: aggregate.live)
            return
        }
        let frame = self.replyFrame(id: aggregate.id) { buffer in
            buffer.writeStaticString("{\"client\":")
            buffer.writeJSONString(self.clientInfo.client)
            if !self.clientInfo.user.isEmpty {
                buffer.writeStaticString(",\"user\":")
                buffer.writeJSONString(self.clientInfo.user)
            }
            if self.transport.isEventStream {
                buffer.writeStaticString(",\"session\":")
                buffer.writeJSONString(self.clientInfo.client + "." + self.sessionSecret)
            }
            buffer.writeStaticString(",\"node\":")
            buffer.writeJSONString(self.node.nodeID)
            buffer.writeStaticString(",\"version\":")
            buffer.writeJSONString(self.node.version)
            buffer.writeStaticString(",\"ping\":")
            buffer.writeString(Self.formatSeconds(self.node.configuration.pingInterval))
            buffer.writeStaticString(",\"pong\":")
            buffer.writeStaticString(self.expectsPong ? "true" : "false")
            if !aggregate.results.isEmpty {
                buffer.writeStaticString(",\"subs\":{")
                for (i, result) in aggregate.results.enumerated() {
                    if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                    buffer.writeJSONString(result.channel)
                    buffer.writeInteger(UInt8(ascii: ":"))
                    switch result.outcome {
                    case .success(let activation): ResultWriter.writeSubscribeResult(&buffer, activation)
                    case .failure(let error):
                        buffer.writeStaticString("{\"error\":")
                        ResultWriter.writeError(&buffer, error)
                        buffer.writeInteger(UInt8(ascii: "}"))
                    }
                }
                buffer.writeInteger(UInt8(ascii: "}"))
            }
            buffer.writeInteger(UInt8(ascii: "}"))
        }
        self.completeReply(aggregate.slot, frame, goLive: aggregate.live)
    }

    private func subscribe(id: UInt32, _ params: SubscribeParams) {
        let slot = self.reserveReply()
        let subscription: SessionSubscription
        do {
            subscription = try self.startSubscription(channel: params.channel, since: params.since, slot: slot)
        } catch {
            self.completeReply(slot, self.errorFrame(id: id, error))
            return
        }
        subscription.replyID = id
        self.requestJoin(subscription, since: params.since)
    }

    /// Checks permissions and limits and registers a joining subscription.
    private func startSubscription(channel: String, since: StreamPosition?, slot: UInt64) throws(SwitchboardError) -> SessionSubscription {
        var options = self.node.configuration.namespaces.options(for: channel)
        // A poll is a moment, not a presence: it neither enters presence nor announces joins.
        if case .collect = self.transport { options.presence = false }
        if let refusal = ChannelPermission.check(.subscribe, options: options, isAnonymous: self.clientInfo.user.isEmpty) { throw refusal }
        guard self.subscriptions[channel] == nil else { throw .alreadySubscribed }
        guard self.subscriptions.count < self.node.configuration.maxSubscriptions else {
            throw .limitExceeded("at most \(self.node.configuration.maxSubscriptions) subscriptions per connection")
        }
        let subscription = SessionSubscription(session: self, id: self.fanout.makeSubscriptionID(), channel: channel, options: options)
        subscription.replySlot = slot
        subscription.requestedSince = options.keepsHistory ? since : nil
        self.subscriptions[channel] = subscription
        self.fanout.addPending(subscription)
        return subscription
    }

    private func requestJoin(_ subscription: SessionSubscription, since: StreamPosition?) {
        self.node.hub.join(
            JoinRequest(
                id: subscription.id,
                loopIndex: self.fanout.index,
                channel: subscription.channel,
                since: subscription.options.keepsHistory ? since : nil,
                options: subscription.options,
                client: self.clientInfo
            )
        )
    }

    /// The hub made the subscription: reply (in order) and go live.
    func activate(_ subscription: SessionSubscription, _ activation: SubscriptionActivation) {
        guard self.state == .connected, self.subscriptions[subscription.channel] === subscription else {
            self.node.hub.leave(channel: activation.channel, id: activation.id)
            return
        }
        subscription.lastOffset = activation.position?.offset ?? 0
        subscription.epoch = activation.position?.epoch
        switch activation.recovered {
        case true: self.fanout.counters.recovered += 1
        case false: self.fanout.counters.notRecovered += 1
        default: break
        }
        if let last = activation.following.last, last.offset > 0 { subscription.lastOffset = last.offset }
        subscription.state = .awaitingReply(activation.following.map(\.frame))
        self.fanout.addLive(subscription)
        if let aggregate = self.connectPending, aggregate.slot == subscription.replySlot {
            aggregate.results.append((subscription.channel, .success(activation)))
            aggregate.live.append(subscription)
            aggregate.remaining -= 1
            self.connectPending = aggregate
            self.finishConnectIfReady()
            self.fanout.markDirty(self)
            return
        }
        let frame = self.replyFrame(id: subscription.replyID) { ResultWriter.writeSubscribeResult(&$0, activation) }
        self.completeReply(subscription.replySlot, frame, goLive: [subscription])
        self.fanout.markDirty(self)
    }

    func rejectSubscription(_ subscription: SessionSubscription, _ error: SwitchboardError) {
        guard self.subscriptions[subscription.channel] === subscription else { return }
        self.subscriptions[subscription.channel] = nil
        if let aggregate = self.connectPending, aggregate.slot == subscription.replySlot {
            aggregate.results.append((subscription.channel, .failure(error)))
            aggregate.remaining -= 1
            self.connectPending = aggregate
            self.finishConnectIfReady()
            self.fanout.markDirty(self)
            return
        }
        self.completeReply(subscription.replySlot, self.errorFrame(id: subscription.replyID, error))
        self.fanout.markDirty(self)
    }

    private func unsubscribe(_ channel: String) {
        guard let subscription = self.subscriptions.removeValue(forKey: channel) else { return }
        self.endSubscription(subscription)
    }

    private func endSubscription(_ subscription: SessionSubscription) {
        if case .joining = subscription.state {
            self.fanout.removePending(subscription.id)
        } else {
            self.fanout.removeLive(subscription)
        }
        self.node.hub.leave(channel: subscription.channel, id: subscription.id)
    }

    /// The server ends one subscription and tells the client (`unsubscribe` push).
    func serverUnsubscribe(_ channel: String, _ code: UnsubscribeCode) {
        guard self.state == .connected, let subscription = self.subscriptions.removeValue(forKey: channel) else { return }
        self.endSubscription(subscription)
        let frame = WebSocketFrameBuilder.frame(allocator: self.allocator) { buffer in
            buffer.writeStaticString("{\"channel\":")
            buffer.writeJSONString(channel)
            buffer.writeStaticString(",\"unsubscribe\":{\"code\":")
            buffer.writeDecimal(code.rawValue)
            buffer.writeStaticString(",\"reason\":")
            buffer.writeJSONString(code.reason)
            buffer.writeStaticString("}}")
        }
        self.write(frame)
        self.fanout.markDirty(self)
    }

    private func publish(id: UInt32, _ params: PublishParams) {
        let options = self.node.configuration.namespaces.options(for: params.channel)
        if let refusal = ChannelPermission.check(.publish, options: options, isAnonymous: self.clientInfo.user.isEmpty) {
            return self.reply(id: id, error: refusal)
        }
        var data = self.allocator.buffer(capacity: 64)
        data.writeJSON(params.data)
        let request = PublishRequest(
            channel: params.channel,
            data: data,
            info: self.clientInfo,
            historySize: options.historySize,
            historyTTL: options.historyTTL,
            idempotencyKey: params.idempotencyKey,
            idempotencyWindow: self.node.configuration.idempotencyWindow,
            time: UInt64(NIODeadline.wallClockNanoseconds)
        )
        let slot = self.reserveReply()
        let loop = self.fanout.eventLoop
        self.fanout.counters.publications += 1
        let started = NIODeadline.now()
        self.node.broker.publish(request).hop(to: loop).assumeIsolated().whenComplete { result in
            self.node.metrics.brokerPublishDuration.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
            switch result {
            case .success(let published):
                let frame = self.replyFrame(id: id) { buffer in
                    if published.position.offset > 0 {
                        buffer.writeStaticString("{\"offset\":")
                        buffer.writeDecimal(published.position.offset)
                        buffer.writeStaticString(",\"epoch\":")
                        buffer.writeJSONString(published.position.epoch)
                        buffer.writeInteger(UInt8(ascii: "}"))
                    } else {
                        buffer.writeStaticString("{}")
                    }
                }
                self.completeReply(slot, frame)
            case .failure:
                self.completeReply(slot, self.errorFrame(id: id, .internalError))
            }
            self.flush()
        }
    }

    private func presence(id: UInt32, channel: String, statsOnly: Bool) {
        let options = self.node.configuration.namespaces.options(for: channel)
        let action: ChannelAction = statsOnly ? .presenceStats : .presence
        if let refusal = ChannelPermission.check(action, options: options, isAnonymous: self.clientInfo.user.isEmpty) {
            return self.reply(id: id, error: refusal)
        }
        let slot = self.reserveReply()
        self.node.broker.presence(channel: channel).hop(to: self.fanout.eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let clients):
                let frame = self.replyFrame(id: id) { buffer in
                    if statsOnly {
                        ResultWriter.writePresenceStats(&buffer, clients)
                    } else {
                        ResultWriter.writePresence(&buffer, clients)
                    }
                }
                self.completeReply(slot, self.bounded(frame, id: id))
            case .failure:
                self.completeReply(slot, self.errorFrame(id: id, .internalError))
            }
            self.flush()
        }
    }

    private func history(id: UInt32, _ params: HistoryParams) {
        let options = self.node.configuration.namespaces.options(for: params.channel)
        if let refusal = ChannelPermission.check(.history, options: options, isAnonymous: self.clientInfo.user.isEmpty) {
            return self.reply(id: id, error: refusal)
        }
        let slot = self.reserveReply()
        let query = HistoryQuery(params, maximumLimit: self.node.configuration.maxHistoryLimit)
        self.node.broker.history(query).hop(to: self.fanout.eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let history):
                // Far too large for the answer: refused before anything is written.
                let least = history.publications.reduce(0) { $0 + $1.data.readableBytes }
                guard least <= self.answerRoom else {
                    self.completeReply(slot, self.errorFrame(id: id, Self.answerTooLarge))
                    self.flush()
                    return
                }
                let frame = self.replyFrame(id: id) { ResultWriter.writeHistory(&$0, history, since: params.since) }
                self.completeReply(slot, self.bounded(frame, id: id))
            case .failure:
                self.completeReply(slot, self.errorFrame(id: id, .internalError))
            }
            self.flush()
        }
    }

    // MARK: Deliveries

    /// Writes one publication or push frame of a subscribed channel (the fan-out path).
    @inline(__always)
    func deliver(_ frame: ByteBuffer, offset: UInt64, subscription: SessionSubscription) {
        if offset > 0 {
            if offset <= subscription.lastOffset { return }  // seen already (seam or broker repeat)
            if offset != subscription.lastOffset + 1 {
                // A hole the hub did not refill: never deliver past it silently.
                self.serverUnsubscribe(subscription.channel, .insufficientState)
                return
            }
            subscription.lastOffset = offset
        }
        switch subscription.state {
        case .live:
            self.write(frame)
            self.fanout.markDirty(self)
        case .awaitingReply(var frames):
            subscription.state = .live  // keep the array uniquely referenced
            frames.append(frame)
            subscription.state = .awaitingReply(frames)
        case .joining:
            break
        }
    }

    /// Writes a batch of one channel's publications: as one frame when the subscriber is exactly at
    /// the batch's start (the usual case), else one by one so duplicates and holes are handled.
    func deliver(_ batch: PublicationBatch, combined: ByteBuffer, subscription: SessionSubscription) {
        let first = batch.firstOffset
        if self.transport.isWebSocket, first == 0 || subscription.lastOffset + 1 == first {
            if first > 0 { subscription.lastOffset = batch.lastOffset }
            switch subscription.state {
            case .live:
                self.write(combined)
                self.fanout.markDirty(self)
            case .awaitingReply(var frames):
                subscription.state = .live
                frames.append(combined)
                subscription.state = .awaitingReply(frames)
            case .joining:
                break
            }
        } else if first == 0 || subscription.lastOffset < batch.lastOffset {
            for part in batch.parts {
                guard self.state == .connected, self.subscriptions[subscription.channel] === subscription else { return }
                self.deliver(part.frame, offset: part.offset, subscription: subscription)
            }
        }
    }

    // MARK: Replies in order

    private func reserveReply() -> UInt64 {
        self.replies.reserve()
    }

    /// No reply is outstanding.
    private var repliesAreDone: Bool { self.replies.isEmpty }

    private func completeReply(_ seq: UInt64, _ frame: ByteBuffer, goLive: [SessionSubscription] = []) {
        self.replies.fill(seq, ReplySlot(frame: frame, goLive: goLive))
        while let ready = self.replies.popReady() {
            self.write(ready.frame)
            for subscription in ready.goLive {
                if case .awaitingReply(let frames) = subscription.state {
                    subscription.state = .live
                    for frame in frames { self.write(frame) }
                }
            }
        }
    }

    /// A reply whose size depends on the channel (history, presence): error 106 instead when it
    /// would not fit what is left of an HTTP answer, or half the connection's outbound limit
    /// (a larger one would end the connection as a slow consumer).
    private func bounded(_ frame: ByteBuffer, id: UInt32) -> ByteBuffer {
        let fits: Bool
        if case .collect(let collector) = self.transport {
            fits = collector.reserve(frame.readableBytes)
        } else {
            fits = frame.readableBytes <= self.answerRoom
        }
        if fits { return frame }
        return self.errorFrame(id: id, Self.answerTooLarge)
    }

    /// Bytes one reply may take: what is left of an HTTP answer, or half the outbound limit.
    private var answerRoom: Int {
        if case .collect(let collector) = self.transport { return collector.remainingBytes }
        return self.node.configuration.outboundLimit / 2
    }

    private static let answerTooLarge = SwitchboardError.limitExceeded("the answer is larger than the outbound limit: ask for fewer with limit")

    private func reply(id: UInt32, _ body: (inout ByteBuffer) -> Void) {
        let slot = self.reserveReply()
        self.completeReply(slot, self.replyFrame(id: id, body))
    }

    private func reply(id: UInt32, error: SwitchboardError) {
        let slot = self.reserveReply()
        self.completeReply(slot, self.errorFrame(id: id, error))
    }

    private var allocator: ByteBufferAllocator { self.context?.channel.allocator ?? ByteBufferAllocator() }

    private func replyFrame(id: UInt32, _ body: (inout ByteBuffer) -> Void) -> ByteBuffer {
        WebSocketFrameBuilder.frame(allocator: self.allocator) { buffer in
            buffer.writeStaticString("{\"id\":")
            buffer.writeDecimal(id)
            buffer.writeStaticString(",\"result\":")
            body(&buffer)
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }

    private func errorFrame(id: UInt32, _ error: SwitchboardError) -> ByteBuffer {
        WebSocketFrameBuilder.frame(allocator: self.allocator) { buffer in
            buffer.writeStaticString("{\"id\":")
            buffer.writeDecimal(id)
            buffer.writeStaticString(",\"error\":")
            ResultWriter.writeError(&buffer, error)
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }

    private func write(_ frame: ByteBuffer) {
        guard self.state != .closed else { return }
        switch self.transport {
        case .webSocket:
            guard let context = self.context else { return }
            context.write(Self.wrapOutboundOut(frame), promise: nil)
        case .eventStream:
            guard let context = self.context else { return }
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(self.eventStreamEvent(frame)))), promise: nil)
        case .collect(let collector):
            guard frame.readableBytes > 0 else { return }
            collector.append(WebSocketFrameBuilder.payload(of: frame))
        }
        self.hasUnflushedWrites = true
        self.liveness.didWrite()
    }

    func flush() {
        guard self.hasUnflushedWrites else { return }
        self.hasUnflushedWrites = false
        switch self.transport {
        case .webSocket, .eventStream:
            self.context?.flush()
        case .collect(let collector):
            self.finishCollectingIfDue(collector)
        }
    }

    /// Whether the client answers pings: SSE and polls cannot.
    private var expectsPong: Bool {
        self.transport.isWebSocket && self.node.configuration.pingInterval > 0
    }

    // MARK: Ending

    /// Ends the connection with `code`; with `push`, a `disconnect` push goes first.
    func disconnect(_ code: DisconnectCode, push: Bool) {
        guard self.state != .closed else { return }
        if case .collect = self.transport {} else if self.context == nil { return }
        // Only WebSocket close frames carry codes; the others get the push always.
        if push || !self.transport.isWebSocket {
            let frame = WebSocketFrameBuilder.frame(allocator: self.allocator) { buffer in
                buffer.writeStaticString("{\"disconnect\":{\"code\":")
                buffer.writeDecimal(code.rawValue)
                buffer.writeStaticString(",\"reason\":")
                buffer.writeJSONString(code.reason)
                buffer.writeStaticString(",\"reconnect\":")
                buffer.writeStaticString(code.reconnect ? "true" : "false")
                buffer.writeStaticString("}}")
            }
            self.write(frame)
        }
        switch self.transport {
        case .webSocket:
            self.flush()
            self.close()
            self.context?.triggerUserOutboundEvent(WebSocketCloseRequest(code: code.rawValue, reason: code.reason), promise: nil)
        case .eventStream:
            self.close()
            guard let context = self.context else { return }
            let channel = context.channel
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        case .collect:
            self.finishCollecting()
        }
    }

    /// Releases everything the session holds at the hub and the fan-out. Idempotent.
    private func close() {
        guard self.state != .closed else { return }
        let wasConnected = self.state == .connected
        self.state = .closed
        for subscription in self.subscriptions.values { self.endSubscription(subscription) }
        self.subscriptions.removeAll()
        self.replies.removeAll()
        self.connectPending = nil
        if wasConnected {
            self.fanout.remove(client: self.clientInfo.client)
            self.node.hub.unregister(client: self.clientInfo.client, user: self.clientInfo.user, transport: self.transport.name)
        }
    }

    /// Called once per sweep: pings, pong and connect timeouts, token expiry.
    func tick(now: NIODeadline) {
        guard self.state != .closed else { return }
        if case .collect = self.transport { return }
        let configuration = self.node.configuration
        switch self.liveness.tick(
            now: now, pingInterval: configuration.pingInterval, pongTimeout: configuration.pongTimeout, expectsPong: self.expectsPong)
        {
        case .none:
            return
        case .ping:
            self.write(Self.pingFrame)
            self.liveness.didWritePing()
            self.fanout.markDirty(self)
        case .close(let code, let push):
            self.disconnect(code, push: push)
        }
    }

    private static let pingFrame: ByteBuffer = WebSocketFrameBuilder.frame(allocator: ByteBufferAllocator()) {
        $0.writeStaticString("{}")
    }

    /// The deadline for a token expiring at `expiresAt` (seconds since 1970, finite): clamped to
    /// [now, 10 years], so any `exp` a signer wrote becomes a deadline without overflow.
    static func deadline(expiresAt: Double, now: Double) -> NIODeadline {
        let remaining = min(max(expiresAt - now, 0), 10 * 365 * 86_400)
        return .now() + .milliseconds(Int64(remaining * 1000))
    }

    static func formatSeconds(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}

@available(*, unavailable)
extension ClientSession: Sendable {}

/// A reply with the subscriptions that go live right after it.
struct ReplySlot {
    var frame: ByteBuffer
    var goLive: [SessionSubscription] = []
}

/// A connect waiting for the subscriptions it asked for (a class: a session holds one only while
/// connecting, so the idle session keeps a nil reference rather than the whole struct inline).
final class ConnectAggregate {
    var id: UInt32
    var slot: UInt64
    var remaining: Int
    var results: [(channel: String, outcome: Result<SubscriptionActivation, SwitchboardError>)] = []
    var live: [SessionSubscription] = []

    init(id: UInt32, slot: UInt64, remaining: Int) {
        self.id = id
        self.slot = slot
        self.remaining = remaining
    }
}

extension HistoryQuery {
    /// The broker query for a client's history command: `limit` missing, negative or above
    /// `maximumLimit` reads `maximumLimit` publications (0 still reads only the position).
    init(_ params: HistoryParams, maximumLimit: Int) {
        let requested = params.limit ?? maximumLimit
        let limit = requested < 0 || requested > maximumLimit ? maximumLimit : requested
        self.init(channel: params.channel, sinceOffset: params.since?.offset, limit: limit, reverse: params.reverse)
    }
}
