import NIOCore
import SwitchboardCore

/// The first handler of every connection. A plain WebSocket handshake for
/// `/ws` (the connection most clients make) is answered here, straight from
/// the request bytes, and the connection goes to the WebSocket handlers
/// without an HTTP pipeline being built and torn down. Anything else (other
/// paths, `/echo`, SSE, polls, the API, a handshake this parser is not sure
/// of, a draining node) gets the full HTTP pipeline, which sees the same
/// bytes and gives every answer and error the HTTP way.
final class HandshakeRouter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// A longer request head is left to the HTTP decoder and its limits.
    static let maximumHeadSize = 8192

    private let node: NodeContext
    private let installHTTP: @Sendable (any Channel, NIODeadline) throws -> Void
    private let installWebSocket: @Sendable (any Channel) throws -> Void
    private var buffer: ByteBuffer?
    /// Whether the connection was admitted under the connection caps; a refused one is answered
    /// (close 3504 after the handshake, or 503) and closed.
    private let admission: ConnectionCounts.Admission
    /// When the request head must be complete, however slowly it trickles in.
    private let headDeadline: NIODeadline
    private var deadlineTimer = RequestDeadlineTimer()
    /// How far the search for the head's end has got: a head trickled in one byte per read is
    /// searched once in all (O(size)), not again from its start at every read (O(size²)).
    private var searchedBytes = 0

    init(
        node: NodeContext,
        admission: ConnectionCounts.Admission = .admitted,
        headDeadline: NIODeadline,
        installHTTP: @escaping @Sendable (any Channel, NIODeadline) throws -> Void,
        installWebSocket: @escaping @Sendable (any Channel) throws -> Void
    ) {
        self.node = node
        self.admission = admission
        self.headDeadline = headDeadline
        self.installHTTP = installHTTP
        self.installWebSocket = installWebSocket
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.deadlineTimer.arm(at: self.headDeadline, on: context.eventLoop) {
            let context = loopBound.value
            // The head never completed: 408, and the socket is closed.
            var response = context.channel.allocator.buffer(capacity: 96)
            response.writeStaticString("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            context.writeAndFlush(NIOAny(response)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadlineTimer.stop()
        self.buffer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if self.buffer == nil {
            self.buffer = incoming
        } else {
            self.buffer!.writeBuffer(&incoming)
        }
        if self.admission != .admitted {
            return self.refuse(context: context)
        }
        let bytes = self.buffer!.readableBytesView
        let prefix = bytes.prefix(8)
        // "GET /ws " or "GET /ws?" and nothing else takes the short path.
        guard Self.webSocketPrefix.starts(with: prefix.prefix(7)), prefix.count < 8 || prefix.last == UInt8(ascii: " ") || prefix.last == UInt8(ascii: "?") else {
            return self.handOver(context: context)
        }
        guard let headEnd = Self.headEnd(bytes, from: self.searchedBytes) else {
            self.searchedBytes = bytes.count
            if bytes.count > Self.maximumHeadSize { self.handOver(context: context) }
            return
        }
        if Self.hasBareCR(bytes[bytes.startIndex..<headEnd]) {
            return self.answerAndClose(context: context, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 36\r\n\r\nCR without LF in the request head.\r\n")
        }
        guard !self.node.isDraining, let key = Self.webSocketKey(bytes[bytes.startIndex..<headEnd]) else {
            return self.handOver(context: context)
        }
        self.upgrade(context: context, key: key, consumed: headEnd - bytes.startIndex)
    }

    /// A connection over the caps: a WebSocket handshake is completed and closed at once with
    /// 3504 (a browser sees a code, not a failed handshake); anything else gets 503.
    private func refuse(context: ChannelHandlerContext) {
        let bytes = self.buffer!.readableBytesView
        guard let headEnd = Self.headEnd(bytes, from: self.searchedBytes) else {
            self.searchedBytes = bytes.count
            if bytes.count > Self.maximumHeadSize { self.answerAndClose(context: context, Self.serviceUnavailable) }
            return
        }
        if self.admission == .addressRate {
            // Shed before any upgrade or token work; the client retries after a second.
            return self.answerAndClose(context: context, Self.tooManyConnects)
        }
        self.deadlineTimer.stop()
        self.buffer = nil
        guard let key = Self.webSocketKey(bytes[bytes.startIndex..<headEnd]) else {
            return self.answerAndClose(context: context, Self.serviceUnavailable)
        }
        var response = context.channel.allocator.buffer(capacity: 200)
        response.writeStaticString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: ")
        WebSocketUpgrader.writeAcceptValue(forKey: key, into: &response)
        response.writeStaticString("\r\n\r\n")
        var close = WebSocketFrameBuilder.closeFrame(code: DisconnectCode.connectionLimit.rawValue, reason: DisconnectCode.connectionLimit.reason, allocator: context.channel.allocator)
        response.writeBuffer(&close)
        context.writeAndFlush(NIOAny(response)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    private static let serviceUnavailable: StaticString =
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\nContent-Type: application/json\r\nContent-Length: 68\r\n\r\n{\"error\":{\"code\":106,\"message\":\"connection limit\",\"temporary\":true}}"

    private static let tooManyConnects: StaticString =
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 69\r\n\r\n{\"error\":{\"code\":111,\"message\":\"too many connects\",\"temporary\":true}}"

    private func answerAndClose(context: ChannelHandlerContext, _ text: StaticString) {
        self.deadlineTimer.stop()
        self.buffer = nil
        var response = context.channel.allocator.buffer(capacity: text.utf8CodeUnitCount)
        response.writeStaticString(text)
        context.writeAndFlush(NIOAny(response)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// Whether a head has a CR that is not followed by LF (it would split a header in two for
    /// one parser and not for another: request smuggling material).
    static func hasBareCR(_ head: ByteBufferView.SubSequence) -> Bool {
        var i = head.startIndex
        while let cr = head[i...].firstIndex(of: UInt8(ascii: "\r")) {
            guard cr + 1 < head.endIndex, head[cr + 1] == UInt8(ascii: "\n") else { return true }
            i = cr + 1
        }
        return false
    }

    private func upgrade(context: ChannelHandlerContext, key: String, consumed: Int) {
        self.deadlineTimer.stop()
        var response = context.channel.allocator.buffer(capacity: 160)
        response.writeStaticString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: ")
        WebSocketUpgrader.writeAcceptValue(forKey: key, into: &response)
        response.writeStaticString("\r\n\r\n")
        context.writeAndFlush(NIOAny(response), promise: nil)
        var rest = self.buffer!
        self.buffer = nil
        rest.moveReaderIndex(forwardBy: consumed)
        do {
            try self.installWebSocket(context.channel)
        } catch {
            context.close(promise: nil)
            return
        }
        if rest.readableBytes > 0 {
            // Frames sent right behind the handshake.
            context.fireChannelRead(Self.wrapInboundOut(rest))
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Builds the HTTP pipeline after this handler, passes it what was read, and steps aside.
    private func handOver(context: ChannelHandlerContext) {
        let bytes = self.buffer!
        self.buffer = nil
        self.deadlineTimer.stop()
        do {
            try self.installHTTP(context.channel, self.headDeadline)
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(Self.wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.buffer = nil
        context.fireChannelInactive()
    }


    private static let webSocketPrefix = Array("GET \(Route.webSocketPath)".utf8)

    /// The index just past the blank line that ends the head, if it has arrived. `searched` bytes
    /// at the start were searched before without finding it (the last three are looked at again:
    /// the blank line may straddle two reads).
    static func headEnd(_ bytes: ByteBufferView, from searched: Int = 0) -> Int? {
        var i = bytes.startIndex + max(0, searched - 3)
        let end = bytes.endIndex
        while i + 3 < end {
            if bytes[i + 3] != UInt8(ascii: "\n") {
                i += 1
                continue
            }
            if bytes[i] == UInt8(ascii: "\r"), bytes[i + 1] == UInt8(ascii: "\n"), bytes[i + 2] == UInt8(ascii: "\r") {
                return i + 4
            }
            i += 1
        }
        return nil
    }

    /// The `Sec-WebSocket-Key` of a head that is a plain RFC 6455 handshake for `/ws`
    /// over HTTP/1.1; nil for anything this parser does not accept without doubt.
    /// Works on the bytes (no strings but the key): it runs for every connection.
    static func webSocketKey(_ head: ByteBufferView.SubSequence) -> String? {
        var lineStart = head.startIndex
        var isRequestLine = true
        var upgrade = false
        var connectionUpgrade = false
        var version = false
        var emptyBody = false
        var key: Range<Int>?
        while lineStart < head.endIndex {
            guard let cr = head[lineStart...].firstIndex(of: UInt8(ascii: "\r")), cr + 1 < head.endIndex,
                head[cr + 1] == UInt8(ascii: "\n")
            else { return nil }
            let line = lineStart..<cr
            lineStart = cr + 2
            if line.isEmpty { break }  // the blank line that ends the head
            if isRequestLine {
                isRequestLine = false
                guard Self.isWebSocketRequestLine(head[line]) else { return nil }
                continue
            }
            guard let colon = head[line].firstIndex(of: UInt8(ascii: ":")), colon > line.lowerBound else { return nil }
            let name = head[line.lowerBound..<colon]
            // No whitespace in or before a field name (and so no obsolete line folding).
            guard !name.contains(where: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) else { return nil }
            let value = Self.trimmed(head, colon + 1..<line.upperBound)
            if Self.equalsIgnoringCase(name, "upgrade") {
                upgrade = upgrade || Self.hasToken(head[value], "websocket")
            } else if Self.equalsIgnoringCase(name, "connection") {
                connectionUpgrade = connectionUpgrade || Self.hasToken(head[value], "upgrade")
            } else if Self.equalsIgnoringCase(name, "sec-websocket-version") {
                guard !version else { return nil }
                version = head[value].elementsEqual("13".utf8)
            } else if Self.equalsIgnoringCase(name, "sec-websocket-key") {
                guard key == nil else { return nil }
                key = value
            } else if Self.equalsIgnoringCase(name, "origin") {
                // A browser page: the HTTP path checks `allowedOrigins` (403 before any 101).
                return nil
            } else if Self.equalsIgnoringCase(name, "content-length") {
                // `Content-Length: 0` (NIO's and some other clients send it) says there is no body,
                // as a handshake must; any other value, or a second one, is the HTTP path's to judge.
                guard !emptyBody, head[value].elementsEqual("0".utf8) else { return nil }
                emptyBody = true
            } else if Self.equalsIgnoringCase(name, "sec-websocket-extensions") || Self.equalsIgnoringCase(name, "sec-websocket-protocol")
                || Self.equalsIgnoringCase(name, "transfer-encoding") {
                // Negotiations and bodies are the HTTP path's business.
                return nil
            }
        }
        guard !isRequestLine, upgrade, connectionUpgrade, version, let key, Self.isWebSocketKey(head[key]) else { return nil }
        return String(decoding: head[key], as: UTF8.self)
    }

    private static let requestLineStart = HandshakeRouter.webSocketPrefix
    private static let requestLineEnd = Array(" HTTP/1.1".utf8)

    /// `GET /ws HTTP/1.1` or `GET /ws?<query> HTTP/1.1`.
    private static func isWebSocketRequestLine(_ line: ByteBufferView.SubSequence) -> Bool {
        guard line.starts(with: Self.requestLineStart), line.count >= Self.requestLineStart.count + Self.requestLineEnd.count,
            line.suffix(Self.requestLineEnd.count).elementsEqual(Self.requestLineEnd)
        else { return false }
        let middle = line.dropFirst(Self.requestLineStart.count).dropLast(Self.requestLineEnd.count)
        if middle.isEmpty { return true }
        return middle.first == UInt8(ascii: "?") && !middle.contains(UInt8(ascii: " "))
    }

    private static func trimmed(_ bytes: ByteBufferView.SubSequence, _ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper, bytes[lower] == UInt8(ascii: " ") || bytes[lower] == UInt8(ascii: "\t") { lower += 1 }
        while upper > lower, bytes[upper - 1] == UInt8(ascii: " ") || bytes[upper - 1] == UInt8(ascii: "\t") { upper -= 1 }
        return lower..<upper
    }

    private static func equalsIgnoringCase(_ bytes: ByteBufferView.SubSequence, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            zip(bytes, expected).allSatisfy { ($0 | 0x20) == $1 || $0 == $1 }
        }
    }

    /// Whether a comma-separated header value holds `token` (ASCII, any case).
    private static func hasToken(_ value: ByteBufferView.SubSequence, _ token: StaticString) -> Bool {
        var start = value.startIndex
        while start <= value.endIndex {
            let end = value[start...].firstIndex(of: UInt8(ascii: ",")) ?? value.endIndex
            let item = Self.trimmed(value, start..<end)
            if Self.equalsIgnoringCase(value[item], token) { return true }
            start = end + 1
        }
        return false
    }
}

@available(*, unavailable)
extension HandshakeRouter: Sendable {}

extension HandshakeRouter {
    /// Whether a `Sec-WebSocket-Key` is the base64 of 16 bytes (RFC 6455 section 4.1).
    fileprivate static func isWebSocketKey(_ key: ByteBufferView.SubSequence) -> Bool {
        guard key.count == 24, key.suffix(2).elementsEqual("==".utf8) else { return false }
        return key.dropLast(2).allSatisfy { byte in
            (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "/")
        }
    }
}
