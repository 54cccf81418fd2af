import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardBroker
import SwitchboardCore

/// The commands a connected client sends: connect, subscribe and unsubscribe, publish, presence, history.
extension ClientSession {
    /// Connects a client whose token (if any) verified (`authenticateConnect` in ClientSession+Auth).
    func connect(id: UInt32, _ params: ConnectParams, claims: ConnectionTokenClaims?) {
        let user = claims?.user ?? ""
        let info = claims?.info
        let tokenExpiry = claims?.expiresAt.map { Self.deadline(expiresAt: $0, now: Date().timeIntervalSince1970) }
        if self.countsUser(user), !self.node.admitUser(user) {
            self.node.metrics.refusedConnectionsUser.increment()
            self.node.logger.debug("connection over the per-user cap", metadata: ["user": "\(user)"])
            return self.disconnect(.connectionLimit, push: false)
        }
        let client = self.fanout.makeClientID(node: self.node.nodeID)
        let slot = self.reserveReply()
        let aggregate = ConnectAggregate(id: id, slot: slot, remaining: 0)
        self.state = .connecting(ClientInfo(client: client, user: user, info: info), aggregate)
        self.liveness.didConnect(tokenExpiry: tokenExpiry)
        self.fanout.add(self, client: client)
        self.node.hub.register(client: client, user: user, loopIndex: self.fanout.index, transport: self.output.transport)
        var subscriptions: [(SessionSubscription, since: StreamPosition?)] = []
        for sub in Self.connectSubs(params.subs, serverSide: self.output.transport.isCollected ? [] : claims?.channels ?? []) {
            do {
                try ChannelName.validate(sub.channel)
                let subscription = try self.startSubscription(channel: sub.channel, since: sub.since, slot: slot, tokenGranted: sub.granted)
                subscriptions.append((subscription, sub.since))
                aggregate.remaining += 1
            } catch {
                aggregate.results.append((sub.channel, .failure(error)))
            }
        }
        for (subscription, since) in subscriptions { self.requestJoin(subscription, since: since) }
        self.finishConnectIfReady()
    }

    /// The subscriptions a `connect` makes: the client's `subs` (with their positions), then the
    /// connection token's `channels` not among them. A channel the token names is granted by the
    /// token (like a subscription token: no namespace flag needed) and counts against the
    /// subscription limit like any other; the client's position for it is kept.
    static func connectSubs(
        _ subs: [(channel: String, since: StreamPosition?)], serverSide: [String]
    ) -> [(channel: String, since: StreamPosition?, granted: Bool)] {
        guard !serverSide.isEmpty else { return subs.map { ($0.channel, $0.since, false) } }
        let granted = Set(serverSide)
        var result = subs.map { ($0.channel, $0.since, granted.contains($0.channel)) }
        var seen = Set(subs.map(\.channel))
        for channel in serverSide where seen.insert(channel).inserted {
            result.append((channel, nil, true))
        }
        return result
    }

    func finishConnectIfReady() {
        guard case .connecting(let clientInfo, let aggregate) = self.state, aggregate.remaining == 0 else { return }
        self.state = .connected(clientInfo)
        if let collector = self.collector {
            if collector.purpose == .poll {
                self.collectConnectResults(aggregate, into: collector)
                collector.isReady = true  // an `/rpc` call is ready once its commands ran
                self.hasUnflushedWrites = true  // the next flush decides whether to answer
            }
            self.completeReply(aggregate.slot, nil, goLive: aggregate.live)
            return
        }
        let message = self.replyMessage(id: aggregate.id) { buffer in
            buffer.writeStaticString("{\"client\":")
            buffer.writeJSONString(clientInfo.client)
            if !clientInfo.user.isEmpty {
                buffer.writeStaticString(",\"user\":")
                buffer.writeJSONString(clientInfo.user)
            }
            if let eventStream = self.output as? EventStreamOutput {
                buffer.writeStaticString(",\"session\":")
                buffer.writeJSONString(clientInfo.client + "." + eventStream.secret)
            }
            buffer.writeStaticString(",\"node\":")
            buffer.writeJSONString(self.node.nodeID)
            buffer.writeStaticString(",\"version\":")
            buffer.writeJSONString(self.node.version)
            buffer.writeStaticString(",\"ping\":")
            buffer.writeString(Self.formatSeconds(self.node.configuration.pingInterval))
            buffer.writeStaticString(",\"pong\":")
            buffer.writeStaticString(self.expectsPong ? "true" : "false")
            if let ttl = self.liveness.tokenTTL(now: .now()) {
                buffer.writeStaticString(",\"expires\":true,\"ttl\":")
                buffer.writeDecimal(ttl)
            }
            if !aggregate.results.isEmpty {
                buffer.writeStaticString(",\"subs\":{")
                for (i, result) in aggregate.results.enumerated() {
                    if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                    buffer.writeJSONString(result.channel)
                    buffer.writeInteger(UInt8(ascii: ":"))
                    switch result.outcome {
                    case .success(let activation):
                        ResultWriter.writeSubscribeResult(&buffer, activation, ttl: self.liveness.subscriptionTTL(result.channel, now: .now()))
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
        self.completeReply(aggregate.slot, message, goLive: aggregate.live)
    }

    func subscribe(id: UInt32, _ params: SubscribeParams) {
        let slot = self.reserveReply()
        let subscription: SessionSubscription
        do throws(SwitchboardError) {
            var tokenExpiry: NIODeadline?
            if let token = params.token {
                let claims = try self.checkSubscriptionToken(token, channel: params.channel).get()
                tokenExpiry = claims.expiresAt.map { Self.deadline(expiresAt: $0, now: Date().timeIntervalSince1970) }
            }
            subscription = try self.startSubscription(
                channel: params.channel, since: params.since, slot: slot, tokenGranted: params.token != nil, tokenExpiry: tokenExpiry)
        } catch {
            self.completeReply(slot, self.errorMessage(id: id, error))
            return
        }
        subscription.replyID = id
        self.requestJoin(subscription, since: params.since)
    }

    /// Checks permissions and limits and registers a joining subscription; `tokenExpiry`: when the
    /// subscription token that admitted it expires (the sweep ends it with 2501 after the grace).
    func startSubscription(
        channel: String, since: StreamPosition?, slot: UInt64, tokenGranted: Bool = false, tokenExpiry: NIODeadline? = nil
    ) throws(SwitchboardError) -> SessionSubscription {
        var options = self.node.configuration.namespaces.options(for: channel)
        // A poll is a moment, not a presence: it neither enters presence nor announces joins.
        if self.output.transport.isCollected { options.presence = false }
        if let refusal = self.permission(.subscribe, channel: channel, options: options, tokenGranted: tokenGranted) { throw refusal }
        guard self.subscriptions[channel] == nil else { throw .alreadySubscribed }
        guard self.subscriptions.count < self.node.configuration.maxSubscriptions else {
            throw .limitExceeded("at most \(self.node.configuration.maxSubscriptions) subscriptions per connection")
        }
        let subscription = SessionSubscription(session: self, id: self.fanout.makeSubscriptionID(), channel: channel, options: options)
        subscription.replySlot = slot
        subscription.requestedSince = options.keepsHistory ? since : nil
        self.subscriptions[channel] = subscription
        self.liveness.setSubscriptionExpiry(channel, tokenExpiry)
        self.fanout.addPending(subscription)
        return subscription
    }

    func requestJoin(_ subscription: SessionSubscription, since: StreamPosition?) {
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
        guard self.isConnected, self.subscriptions[subscription.channel] === subscription else {
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
        subscription.state = .awaitingReply(activation.following.map(\.message))
        self.fanout.addLive(subscription)
        if let aggregate = self.connectPending, aggregate.slot == subscription.replySlot {
            aggregate.results.append((subscription.channel, .success(activation)))
            aggregate.live.append(subscription)
            aggregate.remaining -= 1
            self.finishConnectIfReady()
            self.fanout.markDirty(self)
            return
        }
        let ttl = self.liveness.subscriptionTTL(subscription.channel, now: .now())
        let message = self.replyMessage(id: subscription.replyID) { ResultWriter.writeSubscribeResult(&$0, activation, ttl: ttl) }
        self.completeReply(subscription.replySlot, message, goLive: [subscription])
        self.fanout.markDirty(self)
    }

    func rejectSubscription(_ subscription: SessionSubscription, _ error: SwitchboardError) {
        guard self.subscriptions[subscription.channel] === subscription else { return }
        self.subscriptions[subscription.channel] = nil
        self.liveness.setSubscriptionExpiry(subscription.channel, nil)
        if let aggregate = self.connectPending, aggregate.slot == subscription.replySlot {
            aggregate.results.append((subscription.channel, .failure(error)))
            aggregate.remaining -= 1
            self.finishConnectIfReady()
            self.fanout.markDirty(self)
            return
        }
        self.completeReply(subscription.replySlot, self.errorMessage(id: subscription.replyID, error))
        self.fanout.markDirty(self)
    }

    func unsubscribe(_ channel: String) {
        guard let subscription = self.subscriptions.removeValue(forKey: channel) else { return }
        self.endSubscription(subscription)
    }

    func endSubscription(_ subscription: SessionSubscription) {
        self.liveness.setSubscriptionExpiry(subscription.channel, nil)
        if case .joining = subscription.state {
            self.fanout.removePending(subscription.id)
        } else {
            self.fanout.removeLive(subscription)
        }
        self.node.hub.leave(channel: subscription.channel, id: subscription.id)
    }

    /// The server ends one subscription and tells the client (`unsubscribe` push).
    func serverUnsubscribe(_ channel: String, _ code: UnsubscribeCode) {
        guard self.isConnected, let subscription = self.subscriptions.removeValue(forKey: channel) else { return }
        self.endSubscription(subscription)
        let message = OutboundMessage(allocator: self.allocator) { buffer in
            buffer.writeStaticString("{\"channel\":")
            buffer.writeJSONString(channel)
            buffer.writeStaticString(",\"unsubscribe\":{\"code\":")
            buffer.writeDecimal(code.rawValue)
            buffer.writeStaticString(",\"reason\":")
            buffer.writeJSONString(code.reason)
            buffer.writeStaticString("}}")
        }
        self.write(message)
        self.fanout.markDirty(self)
    }

    func publish(id: UInt32, _ params: PublishParams) {
        let options = self.node.configuration.namespaces.options(for: params.channel)
        if let refusal = self.permission(.publish, channel: params.channel, options: options) {
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
                let message = self.replyMessage(id: id) { buffer in
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
                self.completeReply(slot, message)
            case .failure:
                self.completeReply(slot, self.errorMessage(id: id, .internalError))
            }
            self.flush()
        }
    }

    func presence(id: UInt32, channel: String, statsOnly: Bool) {
        let options = self.node.configuration.namespaces.options(for: channel)
        let action: ChannelAction = statsOnly ? .presenceStats : .presence
        if let refusal = self.permission(action, channel: channel, options: options) {
            return self.reply(id: id, error: refusal)
        }
        let slot = self.reserveReply()
        self.node.broker.presence(channel: channel).hop(to: self.fanout.eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let clients):
                let message = self.replyMessage(id: id) { buffer in
                    if statsOnly {
                        ResultWriter.writePresenceStats(&buffer, clients)
                    } else {
                        ResultWriter.writePresence(&buffer, clients)
                    }
                }
                self.completeReply(slot, self.bounded(message, id: id))
            case .failure:
                self.completeReply(slot, self.errorMessage(id: id, .internalError))
            }
            self.flush()
        }
    }

    func history(id: UInt32, _ params: HistoryParams) {
        let options = self.node.configuration.namespaces.options(for: params.channel)
        if let refusal = self.permission(.history, channel: params.channel, options: options) {
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
                    self.completeReply(slot, self.errorMessage(id: id, Self.answerTooLarge))
                    self.flush()
                    return
                }
                let message = self.replyMessage(id: id) { ResultWriter.writeHistory(&$0, history, since: params.since) }
                self.completeReply(slot, self.bounded(message, id: id))
            case .failure:
                self.completeReply(slot, self.errorMessage(id: id, .internalError))
            }
            self.flush()
        }
    }
}
