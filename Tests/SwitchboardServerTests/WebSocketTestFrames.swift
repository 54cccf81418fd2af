import NIOCore

/// Client frames as a browser would send them (masked), and a reader for server frames.
enum TestFrames {
    static func client(
        opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0,
        key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
    ) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            bytes.append(maskBit | UInt8(payload.count))
        } else if payload.count <= 65535 {
            bytes.append(maskBit | 126)
            bytes.append(UInt8(payload.count >> 8))
            bytes.append(UInt8(payload.count & 0xFF))
        } else {
            bytes.append(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8((payload.count >> shift) & 0xFF)) }
        }
        if masked {
            bytes += key
            bytes += payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
        } else {
            bytes += payload
        }
        return bytes
    }

    static func text(_ text: String, fin: Bool = true) -> [UInt8] { client(opcode: 0x1, Array(text.utf8), fin: fin) }

    struct ServerFrame: Equatable {
        var fin: Bool
        var opcode: UInt8
        var payload: [UInt8]
        var text: String { String(decoding: self.payload, as: UTF8.self) }
        var closeCode: UInt16? {
            guard self.opcode == 0x8, self.payload.count >= 2 else { return nil }
            return UInt16(self.payload[0]) << 8 | UInt16(self.payload[1])
        }
    }

    /// Splits server bytes into frames (server frames are never masked).
    static func parse(_ buffer: inout ByteBuffer) -> [ServerFrame] {
        var frames: [ServerFrame] = []
        while buffer.readableBytes >= 2 {
            let start = buffer.readerIndex
            let b0 = buffer.readInteger(as: UInt8.self)!
            let b1 = buffer.readInteger(as: UInt8.self)!
            var length = Int(b1 & 0x7F)
            if length == 126 {
                guard let l = buffer.readInteger(as: UInt16.self) else { buffer.moveReaderIndex(to: start); break }
                length = Int(l)
            } else if length == 127 {
                guard let l = buffer.readInteger(as: UInt64.self) else { buffer.moveReaderIndex(to: start); break }
                length = Int(l)
            }
            guard let payload = buffer.readBytes(length: length) else { buffer.moveReaderIndex(to: start); break }
            frames.append(ServerFrame(fin: b0 & 0x80 != 0, opcode: b0 & 0x0F, payload: payload))
        }
        return frames
    }
}
