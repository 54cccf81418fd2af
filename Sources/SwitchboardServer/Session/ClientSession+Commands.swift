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
    ///
    /// A user's connection counted against `limits.connectionsPerUser` is first counted on this
    /// node (over the cap here: 3504 at once), then in the broker, across the cluster with Redis
    /// (`admitting` until it answers; over the cap: 3504).
    func connect(id: UInt32, _ params: ConnectParams, claims: ConnectionTokenClaims?) {
        guard self.fanout.acceptsSessions else { return self.disconnect(.shutdown, push: true) }
        // Draining: the drain asks the clients it found to go (spread over its window); one that
        // connects after it started (its WebSocket opened before, its token checked since) is told at
        // once, or it would be in no batch, and the drain would wait its whole window for it. An
        // `/rpc` call is the exception: a moment, not a client to move, served while the node drains.
        guard !self.node.isDraining || self.collector?.purpose == .rpc else { return self.disconnect(.shutdown, push: true) }
        let user = claims?.user ?? ""
        guard self.countsUser(user) else {
            return self.connectAdmitted(id: id, params, claims: claims, client: self.fanout.makeClientID(node: self.node.nodeID))
        }
        guard self.node.admitUser(user) else { return self.refuseOverUserCap(user) }
        let client = self.fanout.makeClientID(node: self.node.nodeID)
        self.userSlot.begin(user: user, connection: client)
        self.state = .admitting(PendingConnect(id: id, params: params, claims: claims, client: client))
        let loop = self.fanout.eventLoop
        // A broker on this loop answers inline (inside the read, which flushes); Redis later.
        var waited = false
        defer { waited = true }
        self.node.broker.acquireUserConnection(
            user: user, connection: client, node: self.node.nodeID, limit: self.node.configuration.limits.connectionsPerUser
        )
            .hop(to: loop).assumeIsolated().whenComplete { result in
                defer { if waited { self.flush() } }
                self.userSlotAnswered(result)
            }
    }

    /// The broker answered whether the connecting user may hold one more connection.
    func userSlotAnswered(_ result: Result<Bool, any Error>) {
        let answer: UserSlot.Answer
        switch result {
        case .success(true): answer = .admitted
        case .success(false): answer = .refused
        case .failure(let error):
            answer = .unavailable
            self.node.userCountUnavailable(error)
        }
        switch self.userSlot.answered(answer) {
        case .none:
            return
        case .releaseBroker:
            self.node.releaseUserInBroker(self.userSlot.user, connection: self.userSlot.connection)
        case .refuse:
            self.node.releaseUser(self.userSlot.user)
            self.refuseOverUserCap(self.userSlot.user)
        case .admit(let degraded):
            if degraded {
                self.node.releaseUserInBroker(self.userSlot.user, connection: self.userSlot.connection)
            }
            guard case .admitting(let pending) = self.state else { return }
            self.state = .awaitingConnect
            self.connectAdmitted(id: pending.id, pending.params, claims: pending.claims, client: pending.client)
            for message in pending.waiting {
                guard !self.isClosed else { return }
                self.handle(message)
            }
        }
    }

    /// Closes a connection over `limits.connectionsPerUser` with 3504.
    private func refuseOverUserCap(_ user: String) {
        self.node.metrics.refusedConnectionsUser.increment()
        self.node.logger.debug("connection over the per-user cap", metadata: ["user": "\(user)"])
        self.disconnect(.connectionLimit, push: false)
    }

    /// Registers the client and starts the subscriptions of its `connect`.
    private func connectAdmitted(id: UInt32, _ params: ConnectParams, claims: ConnectionTokenClaims?, client: String) {
        // The node stopped while the broker counted the user: nothing joins the stopped hub.
        guard self.fanout.acceptsSessions else { return self.disconnect(.shutdown, push: true) }
        // Draining: the drain asks the clients it found to go (spread over its window); one that
        // connects after it started (its WebSocket opened before, its token checked since) is told at
        // once, or it would be in no batch, and the drain would wait its whole window for it. An
        // `/rpc` call is the exception: a moment, not a client to move, served while the node drains.
        guard !self.node.isDraining || self.collector?.purpose == .rpc else { return self.disconnect(.shutdown, push: true) }
        let user = claims?.user ?? ""
        let info = claims?.info
        let tokenExpiry = claims?.expiresAt.map { Self.deadline(expiresAt: $0, now: Date().timeIntervalSince1970) }
        let slot = self.reserveReply()
        let aggregate = ConnectAggregate(id: id, slot: slot, remaining: 0)
        self.state = .connecting(ClientInfo(client: client, user: user, info: info, meta: claims?.meta), aggregate)
        self.liveness.didConnect(tokenExpiry: tokenExpiry)
        self.fanout.removeAwaitingConnect(self)
        self.fanout.add(self, client: client)
        self.node.hub.register(client: client, user: user, loopIndex: self.fanout.index, transport: self.output.transport)
        var subscriptions: [SessionSubscription] = []
        // Recoveries while the address's budget of history bytes is spent: each refused with 111
        // (temporary; clients subscribe again later from the same position). A poll was refused
        // whole before it got here (429).
        let historySpent = self.budgetKey.map { !self.node.historyReads.allowsRead(for: $0) } ?? false
        for sub in Self.connectSubs(params.subs, serverSide: self.output.transport.isCollected ? [] : claims?.channels ?? []) {
            do throws(SwitchboardError) {
                try ChannelName.validate(sub.channel)
                if historySpent, sub.since != nil {
                    self.node.metrics.auth.count(.historyRate)
                    throw Self.historyBudgetSpent
                }
                var granted = sub.granted
                var tokenExpiry: NIODeadline?
                // (A channel subscribed already is refused below without a token check.)
                if self.subscriptions[sub.channel] == nil, let token = params.subTokens[sub.channel] {
                    // Checked as the token of a `subscribe`: it decides alone; expired is 109, invalid 103.
                    let claims = try self.checkSubscriptionToken(token, channel: sub.channel).get()
                    granted = true
                    tokenExpiry = claims.expiresAt.map { Self.deadline(expiresAt: $0, now: Date().timeIntervalSince1970) }
                }
                let subscription = try self.startSubscription(
                    channel: sub.channel, since: sub.since, slot: slot, tokenGranted: granted, tokenExpiry: tokenExpiry)
                subscriptions.append(subscription)
                aggregate.remaining += 1
            } catch {
                aggregate.results.append((sub.channel, .failure(error)))
            }
        }
        for subscription in subscriptions { self.requestJoin(subscription) }
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
                self.enterPollPresence(aggregate, clientInfo, collector)
                collector.isReady = true  // an `/rpc` call is ready once its commands ran
                self.hasUnflushedWrites = true  // the next flush decides whether to answer
            }
            self.completeReply(aggregate.slot, nil, goLive: aggregate.live)
            return
        }
        let message = self.replyMessage(id: aggregate.id) { buffer in
            buffer.writeJSONObject { result in
                result.field("client", string: clientInfo.client)
                if !clientInfo.user.isEmpty {
                    result.field("user", string: clientInfo.user)
                }
                if let eventStream = self.output as? EventStreamOutput {
                    result.field("session", string: clientInfo.client + "." + eventStream.secret)
                }
                result.field("node", string: self.node.nodeID)
                result.field("version", string: self.node.version)
                result.field("ping", json: .number(Self.formatSeconds(self.node.configuration.pingInterval)))
                result.field("pong", bool: self.expectsPong)
                if let ttl = self.liveness.tokenTTL(now: .now()) {
                    result.field("expires", bool: true)
                    result.field("ttl", int: ttl)
                }
                if !aggregate.results.isEmpty {
                    result.object("subs") { subs in
                        for sub in aggregate.results {
                            switch sub.outcome {
                            case .success(let activation):
                                subs.field(sub.channel) {
                                    ResultWriter.writeSubscribeResult(&$0, activation, ttl: self.liveness.subscriptionTTL(sub.channel, now: .now()))
                                }
                            case .failure(let error):
                                subs.object(sub.channel) { $0.object("error") { ResultWriter.errorFields(&$0, error) } }
                            }
                        }
                    }
                }
            }
        }
        self.completeReply(aggregate.slot, message, goLive: aggregate.live)
    }

    func subscribe(id: UInt32, _ params: SubscribeParams) {
        let slot = self.reserveReply()
        // A recovery reads history as `history` does, from the same budget of its address: it is
        // charged what it read once the hub answers (nothing is reserved, so that the recoveries
        // of many clients behind one address reconnecting at once are not refused for the room
        // each might have read). Spent, it is a temporary error (111): clients retry with the same
        // position, so nothing is lost, only later.
        if params.since != nil, let budgetKey = self.budgetKey, !self.node.historyReads.allowsRead(for: budgetKey) {
            self.node.metrics.auth.count(.historyRate)
            self.completeReply(slot, self.errorMessage(id: id, Self.historyBudgetSpent))
            return
        }
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
        self.requestJoin(subscription)
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

    /// Asks the hub to make `subscription`. One that recovers reads history, so it goes through the
    /// session's `recoveryReads` window: a few such reads at the broker at once, the rest in turn.
    func requestJoin(_ subscription: SessionSubscription) {
        guard subscription.requestedSince != nil, case .wait = self.recoveryReads.admit(subscription) else {
            return self.sendJoin(subscription)
        }
    }

    private func sendJoin(_ subscription: SessionSubscription) {
        self.node.hub.join(
            JoinRequest(
                id: subscription.id,
                loopIndex: self.fanout.index,
                channel: subscription.channel,
                since: subscription.requestedSince,
                options: subscription.options,
                client: self.clientInfo,
                recoveryBytes: self.recoveryRoom(for: subscription),
                historyCharge: self.budgetKey.map { HistoryReadCharge(budgets: self.node.historyReads, address: $0) }
            )
        )
    }

    /// What a recovery may read: the room its reply has. The recoveries of a connect share one
    /// reply (`fitRecovery`), so each reads at most what those answered before it left. A poll's
    /// read the whole answer's room each: one stopped before its first publication by less room
    /// could not tell a publication too large for any answer (lost: `recovered: false`) from one
    /// that will fit the next poll; what does not fit what is left is dropped as it comes instead.
    private func recoveryRoom(for subscription: SessionSubscription) -> Int {
        guard self.collector?.purpose != .poll, let aggregate = self.connectPending, aggregate.slot == subscription.replySlot else {
            return self.answerRoom
        }
        return max(0, self.answerRoom - aggregate.recoveredBytes)
    }

    /// The hub answered `subscription`'s join, refused it, or the subscription ended before: if it
    /// held a place in the recovery window, the reads waiting behind it go, in order, each checked
    /// again (the session may have closed, the subscription ended, the address's budget run out).
    func joinEnded(_ subscription: SessionSubscription) {
        if !self.leavingRecoveries.isEmpty { self.leavingRecoveries.removeAll { $0 === subscription } }
        var next = self.recoveryReads.finished(subscription.id)
        while let waiting = next {
            guard !self.isClosed, self.subscriptions[waiting.channel] === waiting, case .joining = waiting.state else {
                next = self.recoveryReads.finished(waiting.id)
                continue
            }
            // A poll was admitted whole (429 before any read); anything else meets the budget per read.
            if self.collector?.purpose != .poll, let budgetKey = self.budgetKey, !self.node.historyReads.allowsRead(for: budgetKey) {
                self.node.metrics.auth.count(.historyRate)
                self.fanout.removePending(waiting.id)
                next = self.recoveryReads.finished(waiting.id)
                self.rejectSubscription(waiting, Self.historyBudgetSpent)
                continue
            }
            self.sendJoin(waiting)
            return
        }
    }

    /// The hub made the subscription: reply (in order) and go live.
    func activate(_ subscription: SessionSubscription, _ activation: SubscriptionActivation) {
        defer { self.joinEnded(subscription) }
        guard self.isConnected, self.subscriptions[subscription.channel] === subscription else {
            self.node.hub.leave(channel: activation.channel, id: activation.id)
            return
        }
        var activation = activation
        if activation.truncated {
            if self.pagesRecovery(subscription) {
                // The poll answers with what was read and goes on from its last one next time: what
                // arrived live since is past a hole, and nothing more joins this answer.
                activation.following = []
            } else {
                activation.recovered = false
                activation.publications = []
            }
        }
        self.fitRecovery(&activation, for: subscription)
        subscription.lastOffset = activation.position?.offset ?? 0
        subscription.epoch = activation.position?.epoch
        switch activation.recovered {
        case true: self.fanout.counters.recovered += 1
        case false: self.fanout.counters.notRecovered += 1
        default: break
        }
        if let last = activation.following.last, last.offset > 0 { subscription.lastOffset = last.offset }
        subscription.state = .awaitingReply(
            replyOffset: activation.position?.offset ?? 0,
            held: activation.following.map { SessionSubscription.HeldMessage(offset: $0.offset, message: $0.message) })
        for following in activation.following { self.waitingBytes &+= following.message.byteCount }
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

    /// A recovery whose publications would not fit the reply's room (what is left of an HTTP answer,
    /// or half the outbound limit, shared by all the subscriptions of one connect) is answered as not
    /// recovered: the client learns it missed publications and resyncs, where a reply of any size
    /// (a connect naming 128 channels, each with a full history of large publications) would have
    /// been built in memory first and then cut the connection as a slow consumer.
    ///
    /// A poll is the exception: it pages (as many publications as fit its answer, then the position of
    /// the last one, and the next poll goes on from there), so it loses nothing by taking them all:
    /// it keeps what fits the room its earlier recoveries left and drops the rest as it comes.
    func fitRecovery(_ activation: inout SubscriptionActivation, for subscription: SessionSubscription) {
        guard activation.recovered == true, !activation.publications.isEmpty else { return }
        let aggregate = self.connectPending.flatMap { $0.slot == subscription.replySlot ? $0 : nil }
        if self.collector?.purpose == .poll {
            // The answer pages: it takes what fits the room its earlier recoveries left, and the next
            // poll goes on from the last of them. The rest is dropped now, not held until every
            // recovery of the poll is in (a poll of 128 channels held 128 answers' worth).
            let room = max(0, self.answerRoom - (aggregate?.recoveredBytes ?? 0))
            let (kept, bytes) = Self.pollPrefix(activation.publications, room: room)
            if kept < activation.publications.count {
                activation.publications.removeSubrange(kept...)
                activation.truncated = true
                activation.following = []  // after a hole now
            }
            aggregate?.recoveredBytes += bytes
            return
        }
        let room = self.answerRoom - (aggregate?.recoveredBytes ?? 0)
        var bytes = 0
        var lastInfo: (info: ClientInfo, bytes: Int)?
        for publication in activation.publications {
            bytes += publication.data.readableBytes + 96
            if let info = publication.info {
                // Consecutive publications of one client share its info: measured once.
                if let last = lastInfo, last.info == info {
                    bytes += last.bytes
                } else {
                    let measured = Self.replyBytes(of: info)
                    lastInfo = (info, measured)
                    bytes += measured
                }
            }
            guard bytes <= room else {
                activation.recovered = false
                activation.publications = []
                return
            }
        }
        aggregate?.recoveredBytes += bytes
    }

    /// How many of a poll recovery's `publications` (oldest first) fit `room`, counted as the broker's
    /// bounded read counts them (`HistoryQuery.fittingCount`), and the bytes they take.
    static func pollPrefix(_ publications: [Publication], room: Int) -> (count: Int, bytes: Int) {
        let count = HistoryQuery(channel: "", limit: -1, maximumBytes: room).fittingCount(publications)
        let bytes = publications.prefix(count).reduce(0) { $0 &+ HistoryQuery.bytes(ofData: $1.data.readableBytes) }
        return (count, bytes)
    }

    /// About what a publication's client info takes in a reply: its fields and its `info` JSON.
    static func replyBytes(of info: ClientInfo) -> Int {
        var bytes = 64 + info.client.utf8.count + info.user.utf8.count
        if let value = info.info {
            var written = ByteBuffer()
            written.writeJSON(value)
            bytes += written.readableBytes
        }
        return bytes
    }

    static let endedBeforeMade = SwitchboardError(.notAvailable, "unsubscribed before the subscription was made")

    /// Whether `subscription`'s recovery can be answered in part: a poll's connect pages (its answer
    /// carries as many as fit, and the next poll goes on from the last of them).
    func pagesRecovery(_ subscription: SessionSubscription) -> Bool {
        self.collector?.purpose == .poll && self.connectPending.map { $0.slot == subscription.replySlot } == true
    }

    /// Answers the subscribe of a subscription that ended while the hub was still making it.
    private func answerEndedJoin(_ subscription: SessionSubscription, _ error: SwitchboardError) {
        guard !self.isClosed else { return }  // the session is ending: nothing more is answered
        if let aggregate = self.connectPending, aggregate.slot == subscription.replySlot {
            aggregate.results.append((subscription.channel, .failure(error)))
            aggregate.remaining -= 1
            self.finishConnectIfReady()
            return
        }
        self.completeReply(subscription.replySlot, self.errorMessage(id: subscription.replyID, error))
    }

    func rejectSubscription(_ subscription: SessionSubscription, _ error: SwitchboardError) {
        defer { self.joinEnded(subscription) }
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

    /// Ends a subscription here and at the hub; one still being made gets `answer` as its
    /// subscribe's reply.
    func endSubscription(_ subscription: SessionSubscription, answer: SwitchboardError = endedBeforeMade) {
        self.liveness.setSubscriptionExpiry(subscription.channel, nil)
        if case .joining = subscription.state {
            // Its read is at the broker and holds memory until it returns: its place in the window
            // stays taken until the hub answers the join (it answers a left one too, with a refusal
            // that `rejectSubscription` finds gone, freeing the place). Else subscribe + unsubscribe
            // pairs would have any number of reads in flight.
            let readOut = !self.isClosed && self.recoveryReads.isInFlight(subscription.id)
            if readOut {
                self.leavingRecoveries.append(subscription)
            } else {
                self.fanout.removePending(subscription.id)
            }
            // Its reply slot is filled here, or every later reply (and a connect waiting for it)
            // would wait behind it for good.
            self.answerEndedJoin(subscription, answer)
            if !readOut { self.joinEnded(subscription) }
        } else {
            self.fanout.removeLive(subscription)
        }
        self.node.hub.leave(channel: subscription.channel, id: subscription.id)
    }

    /// The server ends one subscription and tells the client (`unsubscribe` push).
    func serverUnsubscribe(_ channel: String, _ code: UnsubscribeCode) {
        guard self.isConnected, let subscription = self.subscriptions.removeValue(forKey: channel) else { return }
        if case .joining = subscription.state {
            // Not made yet, so never announced: the subscribe's reply says why, with no push. A token
            // that expired meanwhile answers 109, which clients take as "refresh and try again".
            let answer = code == .subscriptionExpired ? SwitchboardError(.tokenExpired) : Self.endedBeforeMade
            return self.endSubscription(subscription, answer: answer)
        }
        self.endSubscription(subscription)
        let message = OutboundMessage(allocator: self.allocator) { buffer in
            buffer.writeJSONObject { push in
                push.field("channel", string: channel)
                push.object("unsubscribe") { unsubscribe in
                    unsubscribe.field("code", int: code.rawValue)
                    unsubscribe.field("reason", string: code.reason)
                }
            }
        }
        if case .awaitingReply(let replyOffset, var held) = subscription.state {
            // Its subscribe reply is still queued behind an earlier reply: the push goes out after that
            // reply and what it held, or the client would take the reply for a live subscription and
            // never hear that it ended (and miss what follows).
            subscription.state = .live  // keep the array uniquely referenced
            held.append(SessionSubscription.HeldMessage(offset: 0, message: message))
            subscription.state = .awaitingReply(replyOffset: replyOffset, held: held)
            self.waitingBytes &+= message.byteCount
            return
        }
        self.write(message)
        self.fanout.markDirty(self)
    }

    func publish(id: UInt32, _ params: PublishParams) {
        let options = self.node.configuration.namespaces.options(for: params.channel)
        if let refusal = self.permission(.publish, channel: params.channel, options: options) {
            return self.reply(id: id, error: refusal)
        }
        let request = PublishRequest(
            channel: params.channel,
            data: params.data.bytes,
            info: self.clientInfo.withoutMeta,
            historySize: options.historySize,
            historyTTL: options.historyTTL,
            idempotencyKey: params.idempotencyKey,
            idempotencyWindow: self.node.configuration.idempotencyWindow,
            time: UInt64(NIODeadline.wallClockNanoseconds)
        )
        let ticket = PublishTicket(id: id, slot: self.reserveReply(), started: .now())
        self.fanout.counters.publications += 1
        // Through the channel's hub shard: the reply comes in the same batch (and flush) as the echo when it can.
        self.node.hub.publish(request, loop: self.fanout.index, session: self, ticket: ticket)
    }

    /// The broker's answer to a publish of this session (on its loop): the reply, in its slot.
    func completePublish(_ ticket: PublishTicket, _ result: Result<PublishResult, any Error>) {
        self.node.metrics.brokerPublishDuration.recordNanoseconds((NIODeadline.now() - ticket.started).nanoseconds)
        switch result {
        case .success(let published):
            let message = self.replyMessage(id: ticket.id) { ResultWriter.writePublishResult(&$0, published) }
            self.completeReply(ticket.slot, message)
        case .failure:
            self.completeReply(ticket.slot, self.errorMessage(id: ticket.id, .internalError))
        }
        self.fanout.markDirty(self)
    }

    func presence(id: UInt32, channel: String, statsOnly: Bool) {
        let options = self.node.configuration.namespaces.options(for: channel)
        let action: ChannelAction = statsOnly ? .presenceStats : .presence
        if let refusal = self.permission(action, channel: channel, options: options) {
            return self.reply(id: id, error: refusal)
        }
        // A presence read takes the channel's whole table from the broker (10,000 entries, a few MB,
        // for `presenceStats`' two numbers too): it draws on the address's budget of bytes read, as
        // `history` does: a share reserved before the read (so that reads sent together cannot all
        // start on one full budget), settled with what it read.
        let budgetKey = self.budgetKey
        let reservation = Self.historyReservation
        if let budgetKey, !self.node.historyReads.reserve(reservation, for: budgetKey) {
            self.node.metrics.auth.count(.historyRate)
            return self.reply(id: id, error: Self.presenceBudgetSpent)
        }
        let slot = self.reserveReply()
        self.node.hub.presence(channel: channel).hop(to: self.fanout.eventLoop).assumeIsolated().whenComplete { result in
            if let budgetKey {
                let used = (try? result.get()).map(Self.presenceReadBytes) ?? 0
                self.node.historyReads.settle(reserved: reservation, used: used, for: budgetKey)
            }
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
        // The read itself stops past what the answer can hold: a history of large publications is
        // not read whole (from Redis: copied, and Redis busy meanwhile for every client) to be refused.
        let room = self.answerRoom
        // The client address's budget of bytes read: each read reserves a share before it starts (so
        // that reads sent together cannot all start on one full bucket) and is settled with what it
        // read. Not its whole room: 100 reads of small histories in one `/rpc` call must all pass.
        let budgetKey = self.budgetKey
        let reservation = min(room, Self.historyReservation)
        if let budgetKey, !self.node.historyReads.reserve(reservation, for: budgetKey) {
            self.node.metrics.auth.count(.historyRate)
            return self.reply(id: id, error: Self.historyBudgetSpent)
        }
        let slot = self.reserveReply()
        var query = HistoryQuery(params, maximumLimit: self.node.configuration.maxHistoryLimit)
        query.maximumBytes = room
        // Data alone, as the answer was weighed before the read was bounded: no history that fits
        // is refused (`bounded` measures the answer itself).
        query.envelopeBytesPerPublication = 0
        self.node.broker.history(query).hop(to: self.fanout.eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let history):
                // Far too large for the answer: refused before anything is written.
                let least = history.publications.reduce(0) { $0 + $1.data.readableBytes }
                // A truncated read went past the room: all of it is used.
                if let budgetKey { self.node.historyReads.settle(reserved: reservation, used: history.truncated ? room : least, for: budgetKey) }
                guard !history.truncated, least <= self.answerRoom else {
                    self.completeReply(slot, self.errorMessage(id: id, Self.answerTooLarge))
                    self.flush()
                    return
                }
                let message = self.replyMessage(id: id) { ResultWriter.writeHistory(&$0, history, since: params.since) }
                self.completeReply(slot, self.bounded(message, id: id))
            case .failure:
                if let budgetKey { self.node.historyReads.settle(reserved: reservation, used: 0, for: budgetKey) }
                self.completeReply(slot, self.errorMessage(id: id, .internalError))
            }
            self.flush()
        }
    }
}

extension ClientSession {
    /// A `history` or a recovering `subscribe` over the address's budget of history bytes.
    static let historyBudgetSpent = SwitchboardError(.tooManyRequests, "history reads over this address's rate of bytes: retry later")
    static let presenceBudgetSpent = SwitchboardError(.tooManyRequests, "presence reads over this address's rate of bytes: retry later")

    /// What a presence read is charged: about what each entry takes at the broker (its ids and a
    /// fixed share for the rest; the `info` JSON is not serialized only to be measured).
    static func presenceReadBytes(_ clients: [ClientInfo]) -> Int {
        clients.reduce(0) { $0 &+ 64 &+ $1.client.utf8.count &+ $1.user.utf8.count }
    }

    /// What a `history` reserves of its address's budget before its read (at most 256 reads of one
    /// address out at once with the default burst of 16 MiB).
    static let historyReservation = 65_536
}
