import NIOCore
import NIOWebSocket

/// Builds complete, unmasked server WebSocket frames (header + payload) in one
/// buffer, so one publication's frame is built once and written to every subscriber.
struct WebSocketFrameBuilder {
    /// Room reserved in front of the payload for the largest header (2 + 8 bytes).
    static let headerRoom = 10

    /// Builds a frame whose payload is written by `body`.
    static func frame(
        opcode: WebSocketOpcode = .text,
        allocator: ByteBufferAllocator,
        capacity: Int = 256,
        _ body: (inout ByteBuffer) -> Void
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: capacity + headerRoom)
        buffer.moveWriterIndex(forwardBy: headerRoom)
        buffer.moveReaderIndex(forwardBy: headerRoom)
        body(&buffer)
        Self.prependHeader(&buffer, opcode: opcode)
        return buffer
    }

    /// Writes the frame header in front of the readable bytes of a buffer made by `frame`.
    static func prependHeader(_ buffer: inout ByteBuffer, opcode: WebSocketOpcode) {
        let length = buffer.readableBytes
        let first: UInt8 = 0x80 | UInt8(webSocketOpcode: opcode)
        let start = buffer.readerIndex
        if length < 126 {
            buffer.setInteger(first, at: start - 2)
            buffer.setInteger(UInt8(length), at: start - 1)
            buffer.moveReaderIndex(to: start - 2)
        } else if length <= Int(UInt16.max) {
            buffer.setInteger(first, at: start - 4)
            buffer.setInteger(UInt8(126), at: start - 3)
            buffer.setInteger(UInt16(length), at: start - 2)
            buffer.moveReaderIndex(to: start - 4)
        } else {
            buffer.setInteger(first, at: start - 10)
            buffer.setInteger(UInt8(127), at: start - 9)
            buffer.setInteger(UInt64(length), at: start - 8)
            buffer.moveReaderIndex(to: start - 10)
        }
    }

    /// Bytes of the header of a frame with `payloadLength` bytes of payload.
    @inline(__always)
    static func headerLength(payloadLength: Int) -> Int {
        payloadLength < 126 ? 2 : (payloadLength <= Int(UInt16.max) ? 4 : 10)
    }

    /// Writes a text frame's header into the room in front of the readable bytes, leaving the
    /// reader index on the payload (see `OutboundMessage`).
    static func writeTextHeader(into buffer: inout ByteBuffer) {
        let payloadStart = buffer.readerIndex
        Self.prependHeader(&buffer, opcode: .text)
        buffer.moveReaderIndex(to: payloadStart)
    }

    /// A frame carrying `payload` (copied once).
    static func frame(opcode: WebSocketOpcode, payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload = payload
        return Self.frame(opcode: opcode, allocator: allocator, capacity: payload.readableBytes) { $0.writeBuffer(&payload) }
    }

    /// A close frame with a status code and reason.
    static func closeFrame(code: UInt16, reason: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        let reason = Self.closeReason(reason)
        return Self.frame(opcode: .connectionClose, allocator: allocator, capacity: 2 + reason.utf8.count) {
            $0.writeInteger(code)
            $0.writeSubstring(reason)
        }
    }

    /// The longest prefix of `reason` that fits a close frame (125 bytes with the 2-byte code),
    /// cut between characters: a cut inside one would be invalid UTF-8, and decoding it would
    /// put U+FFFD (3 bytes) in its place and grow the frame past the limit.
    static func closeReason(_ reason: String) -> Substring {
        var end = reason.startIndex
        var bytes = 0
        for index in reason.indices {
            let next = reason.index(after: index)
            let length = reason.utf8.distance(from: index, to: next)
            guard bytes + length <= 123 else { break }
            bytes += length
            end = next
        }
        return reason[..<end]
    }
}
