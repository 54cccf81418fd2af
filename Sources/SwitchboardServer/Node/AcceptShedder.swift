#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CoreMetrics
import NIOCore
import SwitchboardCore

/// First on the listening socket's pipeline: drops an accepted connection from an address that
/// floods the node with connects (`ConnectionCounts.sheds`: it has opened its allowance this second
/// and been refused as many again with an answer) before the connection is registered with an event
/// loop. Nothing is read, no handler is built, nothing is answered, and the socket is reset
/// (`SO_LINGER` 0), so it leaves no `TIME_WAIT` behind. A connect storm then costs the node an
/// accept and a close per connection, not a handshake's read, answer and orderly close, and the
/// clients already connected keep their share of the loops. Every other connection goes on to the
/// bootstrap's accept handler untouched; a trusted proxy's connections are never shed.
final class AcceptShedder: ChannelInboundHandler, Sendable {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let connections: ConnectionLimiter
    private let trustedProxies: TrustedProxySet
    private let shed: CoreMetrics.Counter

    init(connections: ConnectionLimiter, trustedProxies: TrustedProxySet, shed: CoreMetrics.Counter) {
        self.connections = connections
        self.trustedProxies = trustedProxies
        self.shed = shed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = Self.unwrapInboundIn(data)
        let address = child.remoteAddress?.ipText ?? ""
        guard self.connections.sheds(address: address, capped: !self.trustedProxies.contains(address)) else {
            context.fireChannelRead(data)
            return
        }
        self.shed.increment()
        child.eventLoop.execute {
            // On the child's loop, so the option is set before the close.
            _ = (child as? any SocketOptionProvider)?.setSoLinger(linger(l_onoff: 1, l_linger: 0))
            child.close(promise: nil)
        }
    }
}
