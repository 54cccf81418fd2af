import NIOCore
import SwitchboardCore

/// First handler on a connection from a `--trusted-proxy` address: learns who the client is before the
/// node routes the request, so the per-address caps and the poll counters use the client's address.
///
/// A PROXY protocol v2 header (at most 536 bytes) is read and removed; without one, the `X-Forwarded-For`
/// of the first request head is read (its last entry: the one the trusted proxy added; the head is
/// forwarded unchanged). Either way `resolved` is called once with the address (the proxy's own when the
/// proxy named nobody) and installs the next handler, then the buffered bytes follow and this handler
/// passes everything through. A connection that never completes its PROXY header or head by
/// `headDeadline` gets 408 and is closed; a malformed PROXY header closes it at once. The proxy's
/// connections should each carry one client (our balancer sends `Connection: close`; HAProxy
/// `http-reuse never`; nginx without upstream keepalive), or use the PROXY protocol.
final class ProxyProtocolHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// Largest head searched for `X-Forwarded-For`: our balancer's own limit (16 KB) and what it
    /// adds. A longer head gets 431 and is closed: taking it with the proxy's address would exempt
    /// its client from every per-address cap.
    static let maximumHeadSize = 17 * 1024

    /// The client's address: the proxy's until resolved.
    private(set) var clientAddress: String
    /// Whether the client reached the proxy over TLS (PROXY SSL TLV or `X-Forwarded-Proto: https`), when said.
    private(set) var clientUsedTLS: Bool?
    private var buffer: ByteBuffer?
    private var phase = Phase.reading

    private enum Phase {
        /// Reading the PROXY header or the head.
        case reading
        /// Refused (431): the answer is written and the connection closed at once; anything that
        /// arrives meanwhile is dropped.
        case refused
        /// The client is known: everything passes through.
        case resolved
    }
    private let headDeadline: NIODeadline
    private var deadlineTimer = RequestDeadlineTimer()
    /// How far the search for the head's end has got (see `HandshakeRouter.searchedBytes`).
    private var searchedBytes = 0
    private let resolved: (ChannelHandlerContext, String) throws -> Void

    init(proxyAddress: String, headDeadline: NIODeadline, resolved: @escaping (ChannelHandlerContext, String) throws -> Void) {
        self.clientAddress = proxyAddress
        self.headDeadline = headDeadline
        self.resolved = resolved
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.deadlineTimer.arm(at: self.headDeadline, on: context.eventLoop) {
            let context = loopBound.value
            var response = context.channel.allocator.buffer(capacity: 80)
            response.writeStaticString("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            context.writeAndFlush(NIOAny(response)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadlineTimer.stop()
        self.buffer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.phase {
        case .resolved: return context.fireChannelRead(data)
        case .refused: return
        case .reading: break
        }
        var incoming = Self.unwrapInboundIn(data)
        if self.buffer == nil {
            self.buffer = incoming
        } else {
            self.buffer!.writeBuffer(&incoming)
        }
        let bytes = self.buffer!.readableBytesView
        switch ProxyProtocolHeader.decode(bytes) {
        case .needMoreBytes:
            return
        case .invalid:
            self.buffer = nil
            context.close(promise: nil)
            return
        case .header(let header, let length):
            self.buffer!.moveReaderIndex(forwardBy: length)
            if let source = header.sourceAddress { self.clientAddress = source }
            if !header.isLocal { self.clientUsedTLS = header.clientUsedTLS }
            self.resolve(context: context)
        case .notProxyProtocol:
            if let end = HandshakeRouter.headEnd(bytes, from: self.searchedBytes) {
                let (address, proto) = Self.forwardedFor(bytes[bytes.startIndex..<end])
                if let address { self.clientAddress = address }
                if let proto { self.clientUsedTLS = proto == "https" }
                self.resolve(context: context)
            } else if bytes.count > Self.maximumHeadSize {
                self.phase = .refused
                self.buffer = nil
                self.deadlineTimer.stop()
                var response = context.channel.allocator.buffer(capacity: 100)
                response.writeStaticString(
                    "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                // Written (a socket takes a short answer at once) and closed without waiting for the
                // peer to read it: a peer that does not read must not keep the connection.
                context.writeAndFlush(NIOAny(response), promise: nil)
                context.close(promise: nil)
            } else {
                self.searchedBytes = bytes.count
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.deadlineTimer.stop()
        context.fireChannelInactive()
    }

    private func resolve(context: ChannelHandlerContext) {
        self.phase = .resolved
        self.deadlineTimer.stop()
        do {
            try self.resolved(context, self.clientAddress)
        } catch {
            self.buffer = nil
            context.close(promise: nil)
            return
        }
        let rest = self.buffer
        self.buffer = nil
        if let rest, rest.readableBytes > 0 {
            context.fireChannelRead(Self.wrapInboundOut(rest))
            context.fireChannelReadComplete()
        }
    }

    /// The last `X-Forwarded-For` entry (an IP literal, else nil) and the last `X-Forwarded-Proto` of a head.
    static func forwardedFor(_ head: ByteBufferView.SubSequence) -> (address: String?, proto: String?) {
        var address: String?
        var proto: String?
        let text = String(decoding: head, as: UTF8.self)
        for line in text.split(separator: "\r\n", omittingEmptySubsequences: true).dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...]
            if name == "x-forwarded-for" {
                let last = value.split(separator: ",").last.map { $0.trimmingFieldWhitespace() } ?? ""
                address = ProxyProtocolHeader.addressBytes(last) != nil ? last : nil
            } else if name == "x-forwarded-proto" {
                proto = value.trimmingFieldWhitespace().lowercased()
            }
        }
        return (address, proto)
    }
}

@available(*, unavailable)
extension ProxyProtocolHandler: Sendable {}
