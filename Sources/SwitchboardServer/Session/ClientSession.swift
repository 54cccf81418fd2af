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

    enum State {
        case awaitingConnect
        case connected
        case closed
    }

    let node: NodeContext
    let fanout: LoopFanout
    let transport: SessionTransport
    /// The secret half of an SSE session id (empty for other transports).
    var sessionSecret = ""
    var receivingCommands = false
    var context: ChannelHandlerContext?
    var state: State = .awaitingConnect
    var clientInfo = ClientInfo(client: "", user: "")
    var subscriptions = SessionSubscriptions()
    /// Replies in command order.
    var replies = ReplyQueue<ReplySlot>()
    var connectPending: ConnectAggregate?
    var hasUnflushedWrites = false
    var isDirty = false

    /// Connect, ping, pong and token deadlines.
    var liveness: SessionLiveness
    /// The command rate of this connection (made at its first command; ClientSession+Auth).
    var commandLimiter: CommandRateLimiter?

    static let parser = JSONParser(maximumDepth: 64, maximumValues: 50_000)

    init(node: NodeContext, fanout: LoopFanout, transport: SessionTransport = .webSocket) {
        self.node = node
        self.fanout = fanout
        self.transport = transport
        self.liveness = SessionLiveness(now: .now())
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

    func handle(_ message: ClientMessage) {
        switch message {
        case .pong:
            return
        case .invalid(let id, let error):
            guard self.state == .connected else { return self.disconnect(.badRequest, push: false) }
            self.reply(id: id, error: error)
        case .command(let command):
            if case .connect(let params) = command.method {
                guard self.state == .awaitingConnect else { return self.reply(id: command.id, error: .badRequest("already connected")) }
                guard self.admitCommand(id: command.id) else { return }
                return self.authenticateConnect(id: command.id, params)
            }
            guard self.state == .connected else { return self.disconnect(.badRequest("command before connect"), push: false) }
            guard self.admitCommand(id: command.id) else { return }
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

    func reserveReply() -> UInt64 {
        self.replies.reserve()
    }

    /// No reply is outstanding.
    var repliesAreDone: Bool { self.replies.isEmpty }

    func completeReply(_ seq: UInt64, _ frame: ByteBuffer, goLive: [SessionSubscription] = []) {
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
    func bounded(_ frame: ByteBuffer, id: UInt32) -> ByteBuffer {
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
    var answerRoom: Int {
        if case .collect(let collector) = self.transport { return collector.remainingBytes }
        return self.node.configuration.outboundLimit / 2
    }

    static let answerTooLarge = SwitchboardError.limitExceeded("the answer is larger than the outbound limit: ask for fewer with limit")

    func reply(id: UInt32, _ body: (inout ByteBuffer) -> Void) {
        let slot = self.reserveReply()
        self.completeReply(slot, self.replyFrame(id: id, body))
    }

    func reply(id: UInt32, error: SwitchboardError) {
        let slot = self.reserveReply()
        self.completeReply(slot, self.errorFrame(id: id, error))
    }

    var allocator: ByteBufferAllocator { self.context?.channel.allocator ?? ByteBufferAllocator() }

    func replyFrame(id: UInt32, _ body: (inout ByteBuffer) -> Void) -> ByteBuffer {
        WebSocketFrameBuilder.frame(allocator: self.allocator) { buffer in
            buffer.writeStaticString("{\"id\":")
            buffer.writeDecimal(id)
            buffer.writeStaticString(",\"result\":")
            body(&buffer)
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }

    func errorFrame(id: UInt32, _ error: SwitchboardError) -> ByteBuffer {
        WebSocketFrameBuilder.frame(allocator: self.allocator) { buffer in
            buffer.writeStaticString("{\"id\":")
            buffer.writeDecimal(id)
            buffer.writeStaticString(",\"error\":")
            ResultWriter.writeError(&buffer, error)
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }

    func write(_ frame: ByteBuffer) {
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
    var expectsPong: Bool {
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
    func close() {
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

    static let pingFrame: ByteBuffer = WebSocketFrameBuilder.frame(allocator: ByteBufferAllocator()) {
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
