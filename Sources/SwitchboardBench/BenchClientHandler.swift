import NIOCore
import NIOWebSocket

/// One benchmark WebSocket client connection, after the HTTP upgrade.
///
/// Sends `connect`, then (for a subscriber) `subscribe`; answers server
/// pings; counts publications into its event loop's `LoopCounters` with a
/// byte scan of each object (offset gaps and per-publisher order are checked
/// per connection). A publisher connection also sends `publish` commands
/// and counts their replies. All client frames are masked.
final class BenchClientHandler: ChannelInboundHandler, RemovableChannelHandler, PublishEndpoint {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private enum State {
        case connecting
        case open
        case closed
    }

    private let loop: LoopCounters
    private let subscribeChannel: String?
    private let token: String?
    private let established: EventLoopPromise<Void>
    private let dialStart: NIODeadline
    /// Publishers are not part of the connection figures.
    private let countsHandshake: Bool
    private var context: ChannelHandlerContext?
    private var state: State = .connecting
    private var nextID: Int64 = 3
    private var lastOffset: Int64 = 0
    /// Highest seq seen per publisher (index = the payload's `src`).
    private var lastSeq: [Int64]
    private var warmed = false
    private var partial: ByteBuffer?
    private static let pongText: ByteBuffer = ByteBuffer(string: "{}")
    /// pingpong: this connection's closed loop (nil in the other scenarios).
    private let pingPongSettings: PingPongSettings?
    private var pingPong = PingPongLoop()
    private var pingPongExpiry: RepeatedTask?

    init(
        loop: LoopCounters,
        subscribeChannel: String?,
        token: String?,
        publishers: Int,
        established: EventLoopPromise<Void>,
        dialStart: NIODeadline,
        countsHandshake: Bool,
        pingPong: PingPongSettings? = nil
    ) {
        self.pingPongSettings = pingPong
        self.countsHandshake = countsHandshake
        self.loop = loop
        self.subscribeChannel = subscribeChannel
        self.token = token
        self.lastSeq = Array(repeating: 0, count: max(1, publishers))
        self.established = established
        self.dialStart = dialStart
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        var buffer = context.channel.allocator.buffer(capacity: 96)
        buffer.writeConnectCommand(token: self.token)
        self.send(context: context, buffer, flush: true)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.pingPongExpiry?.cancel()
        self.pingPongExpiry = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch self.state {
        case .connecting:
            self.established.fail(BenchError(.connection, "closed before the connect reply"))
        case .open:
            if !self.loop.closing { self.loop.counters.dropped += 1 }
        case .closed:
            break
        }
        self.state = .closed
        self.pingPongExpiry?.cancel()
        self.pingPongExpiry = nil
        self.context = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if self.state == .open, !self.loop.closing { self.loop.counters.noteError("connection error: \(error)") }
        if self.state == .connecting { self.established.fail(error) }
        context.close(promise: nil)
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            if frame.fin {
                self.handleMessage(context: context, frame.unmaskedData)
            } else {
                self.partial = frame.unmaskedData
            }
        case .continuation:
            guard var partial = self.partial else { return }
            self.partial = nil
            var more = frame.unmaskedData
            partial.writeBuffer(&more)
            if frame.fin { self.handleMessage(context: context, partial) } else { self.partial = partial }
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(Self.wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            if !self.loop.closing {
                var data = frame.unmaskedData
                let code = data.readInteger(as: UInt16.self).map(String.init) ?? "none"
                self.loop.counters.noteError("closed by the server with code \(code) \(String(buffer: data))")
            }
            context.close(promise: nil)
        default:
            break
        }
    }

    private func handleMessage(context: ChannelHandlerContext, _ message: ByteBuffer) {
        message.withUnsafeReadableBytes { bytes in
            FrameScanner.forEachLine(bytes) { line in
                self.handleObject(context: context, line)
            }
        }
    }

    private func handleObject(context: ChannelHandlerContext, _ line: UnsafeRawBufferPointer) {
        if line.count == 2, line[0] == UInt8(ascii: "{"), line[1] == UInt8(ascii: "}") {
            self.loop.counters.pings += 1
            self.send(context: context, Self.pongText, flush: true)
        } else if FrameScanner.hasPrefix(line, #"{"id":"#) {
            var i = 6
            var id: Int64 = 0
            while i < line.count, line[i] >= UInt8(ascii: "0"), line[i] <= UInt8(ascii: "9") {
                id = id &* 10 &+ Int64(line[i] &- UInt8(ascii: "0"))
                i += 1
            }
            let isError = FrameScanner.hasPrefix(UnsafeRawBufferPointer(rebasing: line[i...]), #","error""#)
            self.handleReply(context: context, id: id, isError: isError, line)
        } else if FrameScanner.hasPrefix(line, #"{"channel":"#) {
            if FrameScanner.contains(line, #""pub":"#) {
                self.handlePublication(line)
            } else if FrameScanner.contains(line, #""unsubscribe":"#) {
                self.loop.counters.noteError(String(decoding: line, as: UTF8.self))
            }  // join/leave need nothing
        } else if FrameScanner.contains(line, #""disconnect":"#) {
            self.loop.counters.noteError(String(decoding: line, as: UTF8.self))
        } else if let id = FrameScanner.integer(line, key: #""id""#) {
            self.handleReply(context: context, id: id, isError: FrameScanner.contains(line, #""error""#), line)
        } else if FrameScanner.contains(line, #""pub""#) {
            self.handlePublication(line)
        }
    }

    private func handleReply(context: ChannelHandlerContext, id: Int64, isError: Bool, _ line: UnsafeRawBufferPointer) {
        switch id {
        case 1:
            guard self.state == .connecting else { return }
            if isError {
                let text = String(decoding: line, as: UTF8.self)
                self.loop.counters.noteError(text)
                self.established.fail(BenchError(.connection, "connect refused: \(text.prefix(200))"))
                context.close(promise: nil)
                return
            }
            self.state = .open
            if self.countsHandshake {
                let now = WallClock.nanoseconds()
                self.loop.counters.handshake.record(nanoseconds: (NIODeadline.now() - self.dialStart).nanoseconds)
                BenchCounters.maxOf(&self.loop.counters.connectEndNanoseconds, now)
                self.loop.counters.series.established(at: now)
            }
            if let channel = self.subscribeChannel {
                var buffer = context.channel.allocator.buffer(capacity: 48 + channel.utf8.count)
                buffer.writeSubscribeCommand(id: 2, channel: channel)
                self.send(context: context, buffer, flush: true)
            }
            self.established.succeed(())
        case 2 where self.subscribeChannel != nil:
            if isError {
                self.loop.counters.subscribeErrors += 1
                self.loop.counters.noteError(String(decoding: line, as: UTF8.self))
            } else {
                self.loop.counters.subscribed += 1
            }
        default:
            if isError {
                self.loop.counters.publishErrors += 1
                self.loop.counters.noteError(String(decoding: line, as: UTF8.self))
            } else {
                self.loop.counters.publishAcks += 1
            }
        }
    }

    /// `{"channel":"c","pub":{"offset":N,"data":{"seq":S,"ts":T[,"src":P],"pad":"..."}}}`:
    /// fields are read in the order the server and the bench write them, with
    /// a keyed search as the fallback for any other layout.
    private func handlePublication(_ line: UnsafeRawBufferPointer) {
        var gap = false
        var from = 0
        if let at = FrameScanner.find(line, #""offset":"#, from: 0), let offset = FrameScanner.integer(line, at: at + 9) {
            gap = self.lastOffset > 0 && offset.value != self.lastOffset + 1
            self.lastOffset = offset.value
            from = offset.end
        } else if let offset = FrameScanner.integer(line, key: #""offset""#) {
            gap = self.lastOffset > 0 && offset != self.lastOffset + 1
            self.lastOffset = offset
        }
        var seq: Int64?
        var next = 0
        if let at = FrameScanner.find(line, #""seq":"#, from: from), let parsed = FrameScanner.integer(line, at: at + 6) {
            seq = parsed.value
            next = parsed.end
        } else {
            seq = FrameScanner.integer(line, key: #""seq""#)
        }
        guard let seq else {
            self.loop.counters.unparsed += 1
            if gap { self.loop.counters.gaps += 1 }
            return
        }
        if let settings = self.pingPongSettings {
            self.handleEcho(line, seq: seq, after: next, gap: gap, settings: settings)
            return
        }
        if seq == 0 {
            if gap { self.loop.counters.gaps += 1 }
            if !self.warmed {
                self.warmed = true
                self.loop.counters.warmed += 1
            }
            return
        }
        let now = WallClock.nanoseconds()
        var sent: Int64?
        if next > 0, FrameScanner.matches(line, #","ts":"#, at: next), let parsed = FrameScanner.integer(line, at: next + 6) {
            sent = parsed.value
            next = parsed.end
        } else {
            sent = FrameScanner.integer(line, key: #""ts""#)
            next = 0
        }
        var source = 0
        if next > 0, FrameScanner.matches(line, #","src":"#, at: next), let parsed = FrameScanner.integer(line, at: next + 7) {
            source = Int(parsed.value)
        } else if next == 0, self.lastSeq.count > 1, let parsed = FrameScanner.integer(line, key: #""src""#) {
            source = Int(parsed)
        }
        var outOfOrder = false
        if source >= 0, source < self.lastSeq.count {
            if seq <= self.lastSeq[source] { outOfOrder = true } else { self.lastSeq[source] = seq }
        }
        self.loop.counters.recordDelivery(at: now, latency: sent.map { now - $0 }, outOfOrder: outOfOrder, gap: gap)
    }

    // MARK: pingpong

    /// The runner's signal (a user inbound event) that every loop is subscribed: start the closed loop.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is PingPongStart, let settings = self.pingPongSettings else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        guard self.state == .open, self.pingPongExpiry == nil else { return }
        let period = max(Int64(50_000_000), settings.timeoutNanoseconds / 4)
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.pingPongExpiry = context.eventLoop.scheduleRepeatedTask(
            initialDelay: .nanoseconds(period),
            delay: .nanoseconds(period)
        ) { _ in
            loopBound.value.expireRoundTrip()
        }
        self.sendRoundTrip()
    }

    private func expireRoundTrip() {
        guard let settings = self.pingPongSettings else { return }
        if self.pingPong.expire(now: Int64(NIODeadline.now().uptimeNanoseconds), limit: settings.timeoutNanoseconds) {
            self.loop.counters.roundTripTimeouts += 1
            self.sendRoundTrip()
        }
    }

    /// Publishes the next round trip if the run is still open and the loop's budget allows.
    private func sendRoundTrip() {
        guard let settings = self.pingPongSettings, self.state == .open, let context = self.context,
            self.loop.pingPongOpen, self.loop.counters.published < self.loop.pingPongBudget
        else { return }
        let seq = self.pingPong.send(now: Int64(NIODeadline.now().uptimeNanoseconds))
        var buffer = context.channel.allocator.buffer(capacity: settings.payloadSize + settings.channel.utf8.count + 96)
        buffer.writePublishCommand(id: self.nextID, channel: settings.channel, seq: seq, source: settings.source, size: settings.payloadSize)
        self.nextID += 1
        let now = WallClock.nanoseconds()
        self.loop.counters.published += 1
        BenchCounters.minNonZero(&self.loop.counters.publishStartNanoseconds, now)
        BenchCounters.maxOf(&self.loop.counters.publishEndNanoseconds, now)
        self.loop.counters.series.published(at: now)
        self.send(context: context, buffer, flush: true)
    }

    /// A publication on this connection's channel: its own echo (matched to
    /// its send), or another connection's on a shared channel.
    private func handleEcho(_ line: UnsafeRawBufferPointer, seq: Int64, after next: Int, gap: Bool, settings: PingPongSettings) {
        if gap { self.loop.counters.gaps += 1 }
        var source: Int64?
        if next > 0, let at = FrameScanner.find(line, #","src":"#, from: next), let parsed = FrameScanner.integer(line, at: at + 7) {
            source = parsed.value
        } else {
            source = FrameScanner.integer(line, key: #""src""#)
        }
        guard source == Int64(settings.source) else {
            self.loop.counters.foreignEchoes += 1
            return
        }
        let now = NIODeadline.now().uptimeNanoseconds
        switch self.pingPong.echo(seq: seq, now: Int64(now)) {
        case .matched(let nanoseconds):
            self.loop.counters.recordDelivery(at: WallClock.nanoseconds(), latency: nanoseconds, outOfOrder: false, gap: false)
            self.sendRoundTrip()
        case .duplicate:
            self.loop.counters.duplicateEchoes += 1
        case .late:
            self.loop.counters.lateEchoes += 1
        case .unexpected:
            self.loop.counters.unexpectedEchoes += 1
        }
    }

    // MARK: outbound

    private func send(context: ChannelHandlerContext, _ buffer: ByteBuffer, flush: Bool) {
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buffer)
        if flush {
            context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
        } else {
            context.write(Self.wrapOutboundOut(frame), promise: nil)
        }
    }

    var isOpen: Bool { self.state == .open && self.context != nil }

    var canPublish: Bool {
        guard self.state == .open, let context = self.context else { return false }
        return context.channel.isWritable
    }

    func publish(channel: String, seq: Int64, source: Int?, size: Int) {
        guard self.state == .open, let context = self.context else { return }
        var buffer = context.channel.allocator.buffer(capacity: size + channel.utf8.count + 96)
        buffer.writePublishCommand(id: self.nextID, channel: channel, seq: seq, source: source, size: size)
        self.nextID += 1
        self.send(context: context, buffer, flush: false)
    }

    func flush() {
        self.context?.flush()
    }
}

@available(*, unavailable)
extension BenchClientHandler: Sendable {}

/// What a pingpong connection publishes: its channel, its own index (the
/// payload's `src`, to tell its echoes from others' on a shared channel),
/// the payload size and the round-trip timeout.
struct PingPongSettings: Sendable {
    var channel: String
    var source: Int
    var payloadSize: Int
    var timeoutNanoseconds: Int64
}

/// Sent down every pingpong connection's pipeline once all are subscribed: start publishing.
struct PingPongStart: Sendable {}
