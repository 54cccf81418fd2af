import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import SwitchboardAuth
import SwitchboardBroker
import SwitchboardCore

/// The protocol state of one client connection: connect, subscriptions with
/// their positions, commands and their replies in order, pings, and every
/// way a connection ends.
///
/// The same session serves every transport through its `SessionOutput`: over
/// WebSocket it is a channel handler after `WebSocketFrameHandler`; over SSE a
/// channel handler after the HTTP handler, fed commands by POST; for a
/// long-poll or an `/rpc` call it lives only as long as one HTTP answer. It
/// lives on one event loop and is touched nowhere else.
///
/// About 530 lines: the session's life from handshake to close, read top to
/// bottom. Its commands are in `ClientSession+Commands.swift`, tokens in
/// `+Auth`, the HTTP transports in `+HTTP`, and its state in the value types
/// beside it (`ReplyQueue`, `SessionLiveness`, `SessionSubscriptions`).
final class ClientSession: ChannelInboundHandler {
    typealias InboundIn = WebSocketMessage

    /// Where the session is in its life; each state carries what exists only then.
    enum State {
        /// Waiting for the `connect` command.
        case awaitingConnect
        /// The token verified; the broker is asked whether the user may hold one more connection
        /// (`limits.connectionsPerUser`). Nothing is registered yet; commands that arrive wait.
        case admitting(PendingConnect)
        /// Connected as the client; the `connect` reply waits for the subscriptions it asked for.
        /// Commands are taken already (their replies queue behind the connect's).
        case connecting(ClientInfo, ConnectAggregate)
        /// Connected as the client, the `connect` answered.
        case connected(ClientInfo)
        /// Ended: nothing is written or registered any more.
        case closed
    }

    let node: NodeContext
    let fanout: LoopFanout
    let output: any SessionOutput
    var state: State = .awaitingConnect
    var subscriptions = SessionSubscriptions()
    /// Replies in command order.
    var replies = ReplyQueue<ReplySlot>()
    /// Bytes waiting in this session rather than in the socket: replies ready but queued behind an
    /// earlier one, and deliveries held until their subscribe reply. Past the outbound limit the
    /// client is a slow consumer as surely as one whose socket stopped taking writes.
    var waitingBytes = 0
    /// Commands of one HTTP body are being run: an `/rpc` answer waits until all have their slots.
    var receivingCommands = false
    var hasUnflushedWrites = false
    var isDirty = false

    /// Connect, ping, pong and token deadlines.
    var liveness: SessionLiveness
    /// When the connection reached the session (rebalancing moves only clients here for a while).
    let createdAt: NIODeadline
    /// The command rate of this connection (made at its first command; ClientSession+Auth).
    var commandLimiter: CommandRateLimiter?
    /// The client's address as per-address budgets count it (`NodeContext.budgetKey`); nil: exempt.
    var budgetKey: String?
    /// What the connection holds under `limits.connectionsPerUser` (given back once, at its end).
    var userSlot = UserSlot()
    /// Its recovering history reads at the broker, a few at a time (ClientSession+Commands).
    var recoveryReads = RecoveryReadWindow<SessionSubscription>()
    /// Subscriptions ended while their recovery read was at the broker: each keeps its place in
    /// `recoveryReads` until the hub answers its (left) join.
    var leavingRecoveries: [SessionSubscription] = []

    static let parser = ClientMessage.parser(maximumDepth: 64, maximumValues: 50_000)

    init(node: NodeContext, fanout: LoopFanout, output: any SessionOutput = WebSocketOutput()) {
        self.node = node
        self.fanout = fanout
        self.output = output
        let now = NIODeadline.now()
        self.createdAt = now
        self.liveness = SessionLiveness(now: now, refreshGrace: Self.refreshGrace(node.configuration.tokens.refreshGrace))
    }

    // MARK: State

    /// The connected client (empty before connect).
    var clientInfo: ClientInfo {
        switch self.state {
        case .connecting(let info, _), .connected(let info): info
        case .awaitingConnect, .admitting, .closed: ClientInfo(client: "", user: "")
        }
    }

    /// Connected, whether or not the `connect` reply went out yet.
    var isConnected: Bool {
        switch self.state {
        case .connecting, .connected: true
        case .awaitingConnect, .admitting, .closed: false
        }
    }

    var isClosed: Bool {
        if case .closed = self.state { return true }
        return false
    }

    /// The connect waiting for its subscriptions, while connecting.
    var connectPending: ConnectAggregate? {
        if case .connecting(_, let aggregate) = self.state { return aggregate }
        return nil
    }

    /// The session's output when it collects one HTTP answer (long-poll, `/rpc`).
    var collector: CollectOutput? { self.output as? CollectOutput }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.output.attach(context)
        // In the pipeline: a WebSocket session, whose `connect` is still to come.
        if case .awaitingConnect = self.state { self.fanout.addAwaitingConnect(self) }
    }

    /// A session put in the pipeline before its connection is active (the node harness does):
    /// the client's address is known only now.
    func channelActive(context: ChannelHandlerContext) {
        if self.budgetKey == nil { self.budgetKey = self.node.budgetKey(forAddress: self.node.clientAddress(of: context.channel)) }
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The context holds its handler for good: keeping it would keep both (and the
        // pipeline) alive after the connection ends.
        self.close()
        self.output.detach()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.isClosed else { return }
        guard case .text(let text) = Self.unwrapInboundIn(data) else { return self.disconnect(.unsupportedData, push: false) }
        self.fanout.counters.bytesIn += text.readableBytes
        self.liveness.didReceive()
        // A lone publish of the plain shape is read without building a tree; anything else, valid or not, below.
        let publish = text.withUnsafeReadableBytes { bytes in
            ClientMessage.parsePublish(UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count), parser: Self.parser)
        }
        if let publish { return self.handle(publish) }
        let values: [JSONValue]
        do {
            values = try text.withUnsafeReadableBytes { bytes throws(JSONParser.Error) in
                try Self.parser.parseSequence(UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count))
            }
        } catch {
            return self.disconnect(.badRequest("malformed JSON"), push: false)
        }
        for value in values {
            guard !self.isClosed else { return }
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
        if !context.channel.isWritable, !self.isClosed {
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

    func handle(_ message: ClientMessage) {
        if case .admitting(let pending) = self.state {
            // Run once the connect is admitted, in order (a refusal drops them with the connection).
            guard pending.waiting.count < PendingConnect.maximumWaiting else {
                return self.disconnect(.badRequest("too many commands before the connect was answered"), push: false)
            }
            pending.waiting.append(message)
            return
        }
        switch message {
        case .pong:
            return self.admitUnanswered()
        case .invalid(let id, let error):
            guard self.isConnected else { return self.disconnect(.badRequest, push: false) }
            // Counted like any command: refusals cost a reply each, so a flood of them is limited too.
            guard self.admitCommand(id: id) else { return }
            self.reply(id: id, error: error)
        case .command(let command):
            if case .connect(let params) = command.method {
                guard case .awaitingConnect = self.state else { return self.reply(id: command.id, error: .badRequest("already connected")) }
                guard self.admitCommand(id: command.id) else { return }
                return self.authenticateConnect(id: command.id, params)
            }
            guard self.isConnected else { return self.disconnect(.badRequest("command before connect"), push: false) }
            guard self.admitCommand(id: command.id) else { return }
            switch command.method {
            case .connect:
                break
            case .subscribe, .unsubscribe:
                if self.output.transport.isCollected {
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
            case .refresh(let token):
                self.refresh(id: command.id, token: token)
            case .subRefresh(let channel, let token):
                self.subRefresh(id: command.id, channel: channel, token: token)
            case .ping:
                self.reply(id: command.id) { $0.writeStaticString("{}") }
            case .unknown:
                self.reply(id: command.id, error: .methodNotFound)
            }
        }
    }

    // MARK: Deliveries

    /// Writes one publication or push of a subscribed channel (the fan-out path).
    @inline(__always)
    func deliver(_ message: OutboundMessage, offset: UInt64, subscription: SessionSubscription) {
        if offset > 0 {
            if offset <= subscription.lastOffset { return }  // seen already (seam or broker repeat)
            if offset != subscription.lastOffset &+ 1 {
                // A hole the hub did not refill: never deliver past it silently.
                self.serverUnsubscribe(subscription.channel, .insufficientState)
                return
            }
            subscription.lastOffset = offset
        }
        switch subscription.state {
        case .live:
            self.write(message)
            self.fanout.markDirty(self)
        case .awaitingReply(let replyOffset, var held):
            subscription.state = .live  // keep the array uniquely referenced
            held.append(SessionSubscription.HeldMessage(offset: offset, message: message))
            subscription.state = .awaitingReply(replyOffset: replyOffset, held: held)
            self.waitingBytes &+= message.byteCount
            self.checkWaitingBytes()
        case .joining:
            break
        }
    }

    /// Writes a batch of one channel's publications: as one message when the subscriber is exactly
    /// at the batch's start and its transport takes that (the usual case), else one by one so
    /// duplicates and holes are handled.
    func deliver(_ batch: PublicationBatch, combined: OutboundMessage, subscription: SessionSubscription) {
        let first = batch.firstOffset
        if self.output.takesCombinedMessages, first == 0 || subscription.lastOffset &+ 1 == first {
            if first > 0 { subscription.lastOffset = batch.lastOffset }
            switch subscription.state {
            case .live:
                self.write(combined)
                self.fanout.markDirty(self)
            case .awaitingReply(let replyOffset, var held):
                subscription.state = .live
                held.append(SessionSubscription.HeldMessage(offset: first == 0 ? 0 : batch.lastOffset, message: combined))
                subscription.state = .awaitingReply(replyOffset: replyOffset, held: held)
                self.waitingBytes &+= combined.byteCount
                self.checkWaitingBytes()
            case .joining:
                break
            }
        } else if first == 0 || subscription.lastOffset < batch.lastOffset {
            for part in batch.parts {
                guard self.isConnected, self.subscriptions[subscription.channel] === subscription else { return }
                self.deliver(part.message, offset: part.offset, subscription: subscription)
            }
        }
    }

    // MARK: Replies in order

    func reserveReply() -> UInt64 {
        self.replies.reserve()
    }

    /// No reply is outstanding.
    var repliesAreDone: Bool { self.replies.isEmpty }

    /// Fills reply slot `seq` with `message` (nil: the slot says nothing) and writes every reply
    /// that is now next in order, each followed by what its subscriptions held back.
    func completeReply(_ seq: UInt64, _ message: OutboundMessage?, goLive: [SessionSubscription] = []) {
        if self.replies.fill(seq, ReplySlot(message: message, goLive: goLive)) {
            self.waitingBytes &+= message?.byteCount ?? 0
        }
        while let ready = self.replies.popReady() {
            self.waitingBytes &-= ready.message?.byteCount ?? 0
            for subscription in ready.goLive {
                if case .awaitingReply(let replyOffset, _) = subscription.state { subscription.writtenOffset = replyOffset }
            }
            if let message = ready.message { self.write(message) }
            for subscription in ready.goLive {
                guard case .awaitingReply(_, let held) = subscription.state else { continue }
                for item in held {
                    if item.offset > 0 { subscription.writtenOffset = item.offset }
                    self.waitingBytes &-= item.message.byteCount
                    self.write(item.message)
                }
                subscription.state = .live
                subscription.writtenOffset = nil
            }
        }
        self.checkWaitingBytes()
    }

    /// Ends the connection as a slow consumer when more than the outbound limit waits in the session.
    /// Not for HTTP answers (polls, `/rpc`): they are bounded when collected and end on their own.
    func checkWaitingBytes() {
        guard self.waitingBytes > self.node.configuration.outboundLimit, self.collector == nil, !self.isClosed else { return }
        self.node.logger.debug("slow consumer: replies and deliveries waiting", metadata: ["client": "\(self.clientInfo.client)"])
        self.fanout.counters.slowConsumers += 1
        self.disconnect(.slowConsumer, push: false)
    }

    /// A reply whose size depends on the channel (history, presence): error 106 instead when it
    /// would not fit what is left of an HTTP answer, or half the connection's outbound limit
    /// (a larger one would end the connection as a slow consumer).
    func bounded(_ message: OutboundMessage, id: UInt32) -> OutboundMessage {
        let fits: Bool
        if let collector = self.collector {
            fits = collector.reserve(message.byteCount)
        } else {
            fits = message.byteCount <= self.answerRoom
        }
        if fits { return message }
        return self.errorMessage(id: id, Self.answerTooLarge)
    }

    /// Bytes one reply may take: what is left of an HTTP answer, or half the outbound limit.
    var answerRoom: Int {
        if let collector = self.collector { return collector.remainingBytes }
        return self.node.configuration.outboundLimit / 2
    }

    static let answerTooLarge = SwitchboardError.limitExceeded("the answer is larger than the outbound limit: ask for fewer with limit")

    func reply(id: UInt32, _ body: (inout ByteBuffer) -> Void) {
        let slot = self.reserveReply()
        self.completeReply(slot, self.replyMessage(id: id, body))
    }

    func reply(id: UInt32, error: SwitchboardError) {
        let slot = self.reserveReply()
        self.completeReply(slot, self.errorMessage(id: id, error))
    }

    var allocator: ByteBufferAllocator { self.output.allocator }

    /// A reply: `{"id":N,"result":<what body writes>}`. The envelope is written by hand, as it
    /// is on the per-message path (every publish is answered); results use `JSONObjectWriter`.
    func replyMessage(id: UInt32, _ body: (inout ByteBuffer) -> Void) -> OutboundMessage {
        OutboundMessage(allocator: self.allocator) { buffer in
            buffer.writeStaticString("{\"id\":")
            buffer.writeDecimal(id)
            buffer.writeStaticString(",\"result\":")
            body(&buffer)
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }

    func errorMessage(id: UInt32, _ error: SwitchboardError) -> OutboundMessage {
        OutboundMessage(allocator: self.allocator) { buffer in
            buffer.writeJSONObject { reply in
                reply.field("id", int: id)
                reply.object("error") { ResultWriter.errorFields(&$0, error) }
            }
        }
    }

    @inline(__always)
    func write(_ message: OutboundMessage) {
        guard !self.isClosed else { return }
        self.output.write(message, from: self)
        self.hasUnflushedWrites = true
        self.liveness.didWrite()
    }

    func flush() {
        guard self.hasUnflushedWrites else { return }
        self.hasUnflushedWrites = false
        self.output.flush(from: self)
    }

    /// Whether the client is expected to answer pings.
    var expectsPong: Bool {
        self.output.answersPings && self.node.configuration.pingInterval > 0
    }

    // MARK: Ending

    /// Ends the connection with `code`; with `push`, a `disconnect` push goes first.
    func disconnect(_ code: DisconnectCode, push: Bool) {
        guard !self.isClosed else { return }
        // Only some closes carry codes (WebSocket's); the others get the push always.
        if push || !self.output.closeCarriesCode {
            let message = OutboundMessage(allocator: self.allocator) { buffer in
                buffer.writeJSONObject { push in
                    push.object("disconnect") { disconnect in
                        disconnect.field("code", int: code.rawValue)
                        disconnect.field("reason", string: code.reason)
                        disconnect.field("reconnect", bool: code.reconnect)
                    }
                }
            }
            self.write(message)
        }
        self.hasUnflushedWrites = false
        self.close()
        self.output.end(code, from: self)
    }

    /// Releases everything the session holds at the hub and the fan-out. Idempotent.
    func close() {
        let client: ClientInfo?
        switch self.state {
        case .closed: return
        case .awaitingConnect, .admitting: client = nil
        case .connecting(let info, _), .connected(let info): client = info
        }
        self.state = .closed
        self.fanout.removeAwaitingConnect(self)
        let release = self.userSlot.end()
        if release.local { self.node.releaseUser(self.userSlot.user) }
        if release.broker { self.node.releaseUserInBroker(self.userSlot.user, connection: self.userSlot.connection) }
        for subscription in self.subscriptions.values { self.endSubscription(subscription) }
        self.subscriptions.removeAll()
        // Nothing waits for their answers now (they left the hub already): a pending entry must not
        // outlive the session it points to.
        for subscription in self.leavingRecoveries { self.fanout.removePending(subscription.id) }
        self.leavingRecoveries = []
        self.replies.removeAll()
        if let client {
            // The hub first: leaving the fan-out may complete a drain, and the node then stops the hub's loop.
            self.node.hub.unregister(client: client.client, user: client.user, transport: self.output.transport)
            self.fanout.remove(client: client.client)
        }
    }

    /// Whether this connection counts against `limits.connectionsPerUser`: a user's, not a poll's
    /// or an `/rpc` call's (those last one HTTP answer).
    func countsUser(_ user: String) -> Bool {
        !self.output.transport.isCollected && self.node.countsUser(user)
    }

    /// Called once per sweep: pings, pong and connect timeouts, token expiry.
    func tick(now: NIODeadline) {
        guard !self.isClosed, !self.output.transport.isCollected else { return }
        let configuration = self.node.configuration
        switch self.liveness.tick(
            now: now, pingInterval: configuration.pingInterval, pongTimeout: configuration.pongTimeout, expectsPong: self.expectsPong)
        {
        case .none:
            break
        case .ping:
            self.write(Self.ping)
            self.liveness.didWritePing()
            self.fanout.markDirty(self)
        case .close(let code, let push):
            if code == .tokenExpired { self.node.metrics.auth.count(.connectionExpired) }
            return self.disconnect(code, push: push)
        }
        for channel in self.liveness.expiredSubscriptions(now: now) {
            self.node.metrics.auth.count(.subscriptionExpired)
            self.serverUnsubscribe(channel, .subscriptionExpired)
        }
    }

    static let ping = OutboundMessage(allocator: ByteBufferAllocator()) {
        $0.writeStaticString("{}")
    }

    /// The deadline for a token expiring at `expiresAt` (seconds since 1970, finite): clamped to
    /// [now, 10 years], so any `exp` a signer wrote becomes a deadline without overflow.
    static func deadline(expiresAt: Double, now: Double) -> NIODeadline {
        let remaining = min(max(expiresAt - now, 0), 10 * 365 * 86_400)
        return .now() + .milliseconds(Int64(remaining * 1000))
    }

    /// `tokens.refreshGrace` seconds (checked finite and in range when loaded) as a duration.
    static func refreshGrace(_ seconds: Double) -> TimeAmount {
        .milliseconds(Int64(min(max(seconds, 0), 86_400) * 1000))
    }

    static func formatSeconds(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}

@available(*, unavailable)
extension ClientSession: Sendable {}

/// A reply (nil: nothing to write) with the subscriptions that go live right after it.
struct ReplySlot {
    var message: OutboundMessage?
    var goLive: [SessionSubscription] = []
}

/// A verified `connect` waiting for the broker's per-user answer, and the messages that arrived
/// meanwhile (run in order once it is admitted).
final class PendingConnect {
    let id: UInt32
    let params: ConnectParams
    let claims: ConnectionTokenClaims?
    /// The client id the connection will have (its id in the broker's count already).
    let client: String
    var waiting: [ClientMessage] = []

    /// Messages kept while waiting; one more closes the connection (a client that pipelines
    /// more than this behind its `connect` before the answer is not a client we want).
    static let maximumWaiting = 100

    init(id: UInt32, params: ConnectParams, claims: ConnectionTokenClaims?, client: String) {
        self.id = id
        self.params = params
        self.claims = claims
        self.client = client
    }
}

/// A connect waiting for the subscriptions it asked for (a class: a session holds one only while
/// connecting, so the idle session keeps a nil reference rather than the whole struct inline).
final class ConnectAggregate {
    var id: UInt32
    var slot: UInt64
    var remaining: Int
    var results: [(channel: String, outcome: Result<SubscriptionActivation, SwitchboardError>)] = []
    var live: [SessionSubscription] = []
    /// What the recovered publications of the results so far take in the reply (`fitRecovery`).
    var recoveredBytes = 0

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
