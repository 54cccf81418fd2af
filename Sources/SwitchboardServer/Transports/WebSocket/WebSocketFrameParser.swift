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

    /// One frame as read off the wire; `payload` is still masked (a slice of the received bytes).
    struct Frame {
        var fin: Bool
        /// RSV1-3 as they sit in the first byte (`0x70`); zero unless an extension was negotiated.
        var reservedBits: UInt8
        var opcode: WebSocketOpcode
        /// The 32-bit masking key, first byte most significant; nil for an unmasked frame.
        var maskKey: UInt32?
        var payload: ByteBuffer

        /// The payload unmasked into a buffer of its own, sized to it.
        ///
        /// The received bytes are shared with the channel's receive buffer, so unmasking always
        /// copies; this copy XORs eight bytes at a time instead of NIO's byte-by-byte loop.
        func unmaskedPayload(allocator: ByteBufferAllocator) -> ByteBuffer {
            guard let key = self.maskKey else { return self.payload }
            let count = self.payload.readableBytes
            var output = allocator.buffer(capacity: count)
            // The key repeats every four bytes, in wire order: as a little- or big-endian word
            // loaded from memory, the pattern is the key's bytes in memory order.
            let keyBytes = key.bigEndian
            let word32 = UInt64(keyBytes)
            let word = word32 | (word32 << 32)
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { destination in
                self.payload.withUnsafeReadableBytes { source in
                    var index = 0
                    while index + 8 <= count {
                        let chunk = source.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                        destination.storeBytes(of: chunk ^ word, toByteOffset: index, as: UInt64.self)
                        index += 8
                    }
                    withUnsafeBytes(of: keyBytes) { keyMemory in
                        while index < count {
                            destination[index] = source[index] ^ keyMemory[index & 3]
                            index += 1
                        }
                    }
                }
                return count
            }
            return output
        }
    }

    /// The next whole frame, consumed from `buffer`; nil while it has not all arrived.
    static func next(_ buffer: inout ByteBuffer, maximumLength: Int) throws(Failure) -> Frame? {
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
        var maskKey: UInt32?
        if masked {
            guard let key = buffer.getInteger(at: start + headerLength, as: UInt32.self) else { return nil }
            maskKey = key
            headerLength += 4
        }
        let payloadLength = Int(length)
        guard buffer.readableBytes >= headerLength + payloadLength,
            let payload = buffer.getSlice(at: start + headerLength, length: payloadLength)
        else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength + payloadLength)
        return Frame(
            fin: fin,
            reservedBits: first & 0x70,
            opcode: WebSocketOpcode(encodedWebSocketOpcode: opcodeBits)!,
            maskKey: maskKey,
            payload: payload
        )
    }
}
