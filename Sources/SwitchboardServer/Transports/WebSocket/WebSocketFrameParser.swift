import NIOCore
import NIOWebSocket

/// Reads RFC 6455 frames out of received bytes, in place (no handler of its
/// own, so a connection carries one WebSocket handler instead of a decoder,
/// its `ByteToMessageHandler` and their contexts).
///
/// Checks what must be known before the payload is buffered: the length
/// limit, the 64-bit length's top bit, and control frames (at most 125
/// bytes, never fragmented). Everything else is `WebSocketFrameHandler`'s.
enum WebSocketFrameParser {
    enum Failure: Error, Equatable {
        /// The frame is longer than allowed (close 1009).
        case tooLarge
        /// The header breaks RFC 6455 (close 1002).
        case protocolError(String)
    }

    /// The next whole frame, consumed from `buffer`; nil while it has not all arrived.
    static func next(_ buffer: inout ByteBuffer, maximumLength: Int) throws(Failure) -> WebSocketFrame? {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self),
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return nil }
        let opcodeBits = first & 0x0F
        let fin = first & 0x80 != 0
        let masked = second & 0x80 != 0
        var headerLength = 2
        var length: UInt64
        switch second & 0x7F {
        case 126:
            guard let value = buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = UInt64(value)
            headerLength = 4
        case 127:
            guard let value = buffer.getInteger(at: start + 2, as: UInt64.self) else { return nil }
            guard value & (1 << 63) == 0 else { throw .protocolError("64-bit length with the top bit set") }
            length = value
            headerLength = 10
        case let short:
            length = UInt64(short)
        }
        if opcodeBits & 0x08 != 0 {
            guard fin else { throw .protocolError("fragmented control frame") }
            guard length <= 125 else { throw .protocolError("control frame longer than 125 bytes") }
        }
        guard length <= UInt64(maximumLength) else { throw .tooLarge }
        var maskKey: WebSocketMaskingKey?
        if masked {
            guard let key = buffer.getBytes(at: start + headerLength, length: 4) else { return nil }
            maskKey = WebSocketMaskingKey(key)
            headerLength += 4
        }
        let payloadLength = Int(length)
        guard buffer.readableBytes >= headerLength + payloadLength,
            let data = buffer.getSlice(at: start + headerLength, length: payloadLength)
        else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength + payloadLength)
        return WebSocketFrame(
            fin: fin,
            rsv1: first & 0x40 != 0,
            rsv2: first & 0x20 != 0,
            rsv3: first & 0x10 != 0,
            opcode: WebSocketOpcode(encodedWebSocketOpcode: opcodeBits)!,
            maskKey: maskKey,
            data: data
        )
    }
}
