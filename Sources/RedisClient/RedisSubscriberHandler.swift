import NIOCore
import RESP

/// What a subscriber connection hears.
enum RedisSubscriberEvent {
    case message(channel: String, payload: ByteBuffer)
    case subscribed(channel: String)
    case unsubscribed(channel: String)
    case reply(RESPToken)
}

/// Reads pub/sub traffic (`message`, `subscribe`, `unsubscribe`, RESP2 arrays or RESP3 pushes).
final class RedisSubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = RESPToken

    private let onEvent: (RedisSubscriberEvent) -> Void

    init(onEvent: @escaping (RedisSubscriberEvent) -> Void) {
        self.onEvent = onEvent
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let token = Self.unwrapInboundIn(data)
        let elements: [RESPToken]
        switch token.value {
        case .array(let array), .push(let array):
            elements = Array(array)
        case .attribute:
            return  // metadata before the reply it belongs to, not a reply (it would answer the handshake)
        default:
            self.onEvent(.reply(token))
            return
        }
        guard let kind = elements.first?.string?.lowercased() else { return self.onEvent(.reply(token)) }
        switch kind {
        case "message", "smessage":
            guard elements.count == 3, let channel = elements[1].string, let payload = elements[2].bytes else { return }
            self.onEvent(.message(channel: channel, payload: payload))
        case "subscribe", "ssubscribe":
            guard elements.count >= 2, let channel = elements[1].string else { return }
            self.onEvent(.subscribed(channel: channel))
        case "unsubscribe", "sunsubscribe":
            guard elements.count >= 2, let channel = elements[1].string else { return }
            self.onEvent(.unsubscribed(channel: channel))
        default:
            self.onEvent(.reply(token))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension RedisSubscriberHandler: Sendable {}
