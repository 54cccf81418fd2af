public import NIOCore

/// Base64url without padding (RFC 4648 section 5), as in JWTs and SSE event ids.
public enum Base64URL {
    /// Encodes bytes.
    public static func encode(_ bytes: [UInt8]) -> String {
        var text = ByteBuffer()
        bytes.withUnsafeBytes { Self.write($0, into: &text) }
        return String(buffer: text)
    }

    /// Writes the base64url text of `bytes` into `buffer`: a table lookup per character, no
    /// Foundation and no intermediate string (every SSE event carries a resume id made this way).
    public static func write(_ bytes: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        let count = bytes.count
        guard count > 0 else { return }
        let length = count / 3 * 4 + [0, 2, 3][count % 3]
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { room in
            Self.encodeTable.withUnsafeBufferPointer { table in
                var out = 0
                var index = 0
                while index + 3 <= count {
                    let group = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
                    room[out] = table[Int(group >> 18)]
                    room[out + 1] = table[Int(group >> 12 & 63)]
                    room[out + 2] = table[Int(group >> 6 & 63)]
                    room[out + 3] = table[Int(group & 63)]
                    out += 4
                    index += 3
                }
                switch count - index {
                case 1:
                    let group = UInt32(bytes[index]) << 16
                    room[out] = table[Int(group >> 18)]
                    room[out + 1] = table[Int(group >> 12 & 63)]
                case 2:
                    let group = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8
                    room[out] = table[Int(group >> 18)]
                    room[out + 1] = table[Int(group >> 12 & 63)]
                    room[out + 2] = table[Int(group >> 6 & 63)]
                default:
                    break
                }
            }
            return length
        }
    }

    private static let encodeTable: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Decodes text, padded or not; nil when it is not base64url (no `+`, `/`, whitespace, or
    /// bits left over in the last character). A table lookup per byte, no Foundation: it runs for
    /// every token segment.
    public static func decode(_ text: Substring) -> [UInt8]? {
        if let decoded = text.utf8.withContiguousStorageIfAvailable({ Self.decode($0) }) { return decoded }
        return Array(text.utf8).withUnsafeBufferPointer { Self.decode($0) }
    }

    /// Decodes the base64url text in `text` (UTF-8 bytes), as ``decode(_:)-(Substring)`` does.
    public static func decode(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard text.count <= 1 << 20 else { return nil }
        // Up to two `=` of padding, only where padding can be.
        var count = text.count
        var padding = 0
        while count > 0, text[count - 1] == UInt8(ascii: "="), padding < 2 {
            count -= 1
            padding += 1
        }
        if padding > 0, (count + padding) % 4 != 0 { return nil }
        guard count % 4 != 1 else { return nil }
        let capacity = count * 3 / 4
        var valid = true
        let output = [UInt8](unsafeUninitializedCapacity: capacity) { output, initialized in
            var accumulator: UInt32 = 0
            var bits = 0
            var written = 0
            Self.decodeTable.withUnsafeBufferPointer { table in
                for index in 0..<count {
                    let value = table[Int(text[index])]
                    guard value != 0xFF else {
                        valid = false
                        return
                    }
                    accumulator = (accumulator << 6) | UInt32(value)
                    bits += 6
                    if bits >= 8 {
                        bits -= 8
                        output[written] = UInt8(truncatingIfNeeded: accumulator >> UInt32(bits))
                        written += 1
                        accumulator &= (1 << UInt32(bits)) - 1
                    }
                }
            }
            // Leftover bits must be zero (one canonical spelling per byte string).
            if accumulator != 0 { valid = false }
            initialized = written
        }
        return valid ? output : nil
    }

    private static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        for (index, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(index) }
        return table
    }()
}
