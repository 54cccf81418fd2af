import Foundation

/// Base64url without padding (RFC 4648 section 5), as in JWTs and SSE event ids.
public enum Base64URL {
    /// Encodes bytes.
    public static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Decodes text, padded or not; nil when it is not base64url (no `+`, `/`, whitespace, or
    /// bits left over in the last character). A table lookup per byte, no Foundation: it runs for
    /// every token segment.
    public static func decode(_ text: Substring) -> [UInt8]? {
        var utf8 = text.utf8[...]
        guard utf8.count <= 1 << 20 else { return nil }
        // Up to two `=` of padding, only where padding can be.
        var padding = 0
        while utf8.last == UInt8(ascii: "="), padding < 2 {
            utf8 = utf8.dropLast()
            padding += 1
        }
        if padding > 0, (utf8.count + padding) % 4 != 0 { return nil }
        guard utf8.count % 4 != 1 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(utf8.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in utf8 {
            let value = Self.decodeTable[Int(byte)]
            guard value != 0xFF else { return nil }
            accumulator = (accumulator << 6) | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        // Leftover bits must be zero (one canonical spelling per byte string).
        guard accumulator == 0 else { return nil }
        return output
    }

    private static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        for (index, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(index) }
        return table
    }()
}
