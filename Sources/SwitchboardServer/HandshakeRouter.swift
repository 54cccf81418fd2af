import NIOCore

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
    private let installHTTP: @Sendable (any Channel) throws -> Void
    private let installWebSocket: @Sendable (any Channel) throws -> Void
    private var buffer: ByteBuffer?

    init(
        node: NodeContext,
        installHTTP: @escaping @Sendable (any Channel) throws -> Void,
        installWebSocket: @escaping @Sendable (any Channel) throws -> Void
    ) {
        self.node = node
        self.installHTTP = installHTTP
        self.installWebSocket = installWebSocket
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if self.buffer == nil {
            self.buffer = incoming
        } else {
            self.buffer!.writeBuffer(&incoming)
        }
        let bytes = self.buffer!.readableBytesView
        let prefix = bytes.prefix(8)
        // "GET /ws " or "GET /ws?" and nothing else takes the short path.
        guard Self.webSocketPrefix.starts(with: prefix.prefix(7)), prefix.count < 8 || prefix.last == UInt8(ascii: " ") || prefix.last == UInt8(ascii: "?") else {
            return self.handOver(context: context)
        }
        guard let headEnd = Self.headEnd(bytes) else {
            if bytes.count > Self.maximumHeadSize { self.handOver(context: context) }
            return
        }
        guard !self.node.isDraining, let key = Self.webSocketKey(bytes[bytes.startIndex..<headEnd]) else {
            return self.handOver(context: context)
        }
        self.upgrade(context: context, key: key, consumed: headEnd - bytes.startIndex)
    }

    private func upgrade(context: ChannelHandlerContext, key: String, consumed: Int) {
        var response = context.channel.allocator.buffer(capacity: 160)
        response.writeStaticString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: ")
        response.writeString(WebSocketUpgrader.acceptValue(forKey: key))
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
        do {
            try self.installHTTP(context.channel)
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

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            // A client that opens a socket and does not finish a request loses it.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private static let webSocketPrefix = Array("GET /ws".utf8)

    /// The index just past the blank line that ends the head, if it has arrived.
    static func headEnd(_ bytes: ByteBufferView) -> Int? {
        var i = bytes.startIndex
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
    static func webSocketKey(_ head: ByteBufferView.SubSequence) -> String? {
        guard let text = String(validating: head, as: UTF8.self) else { return nil }
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        // The head ends with an empty line (and the split gives one more empty piece).
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let requestLine = lines.first else { return nil }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "GET", parts[2] == "HTTP/1.1" else { return nil }
        let target = parts[1]
        guard target == "/ws" || target.hasPrefix("/ws?") else { return nil }
        var upgrade = false
        var connectionUpgrade = false
        var version = false
        var key: Substring?
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else { return nil }
            let name = line[..<colon]
            // No whitespace inside or before a field name, no obsolete line folding.
            guard !name.contains(where: { $0 == " " || $0 == "\t" }) else { return nil }
            let value = line[line.index(after: colon)...].trimmingSpaces
            switch name.lowercased() {
            case "upgrade":
                upgrade = value.split(separator: ",").contains { $0.trimmingSpaces.lowercased() == "websocket" }
            case "connection":
                connectionUpgrade = value.split(separator: ",").contains { $0.trimmingSpaces.lowercased() == "upgrade" }
            case "sec-websocket-version":
                guard !version else { return nil }
                version = value == "13"
            case "sec-websocket-key":
                guard key == nil else { return nil }
                key = value
            case "sec-websocket-extensions", "sec-websocket-protocol", "transfer-encoding", "content-length":
                // Negotiations and bodies are the HTTP path's business.
                return nil
            default:
                break
            }
        }
        guard upgrade, connectionUpgrade, version, let key, Self.isWebSocketKey(key) else { return nil }
        return String(key)
    }
}

@available(*, unavailable)
extension HandshakeRouter: Sendable {}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while let first = s.first, first == " " || first == "\t" { s.removeFirst() }
        while let last = s.last, last == " " || last == "\t" { s.removeLast() }
        return s
    }
}

extension HandshakeRouter {
    /// Whether a `Sec-WebSocket-Key` is the base64 of 16 bytes (RFC 6455 section 4.1).
    fileprivate static func isWebSocketKey(_ key: Substring) -> Bool {
        let utf8 = key.utf8
        guard utf8.count == 24, key.hasSuffix("==") else { return false }
        return utf8.dropLast(2).allSatisfy { byte in
            (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "/")
        }
    }
}
