public import NIOCore

/// Writes JSON text straight into a `ByteBuffer`, with no intermediate strings.
extension ByteBuffer {
    /// Writes `value` as compact JSON.
    public mutating func writeJSON(_ value: JSONValue) {
        switch value {
        case .null: self.writeStaticString("null")
        case .bool(let b): self.writeStaticString(b ? "true" : "false")
        case .number(let text): self.writeString(text)
        case .raw(let raw): self.writeImmutableBuffer(raw.bytes)
        case .string(let s): self.writeJSONString(s)
        case .array(let elements):
            self.writeInteger(UInt8(ascii: "["))
            for (i, element) in elements.enumerated() {
                if i > 0 { self.writeInteger(UInt8(ascii: ",")) }
                self.writeJSON(element)
            }
            self.writeInteger(UInt8(ascii: "]"))
        case .object(let object):
            self.writeInteger(UInt8(ascii: "{"))
            for (i, member) in object.members.enumerated() {
                if i > 0 { self.writeInteger(UInt8(ascii: ",")) }
                self.writeJSONString(member.key)
                self.writeInteger(UInt8(ascii: ":"))
                self.writeJSON(member.value)
            }
            self.writeInteger(UInt8(ascii: "}"))
        }
    }

    /// Writes `string` as a quoted, escaped JSON string.
    public mutating func writeJSONString(_ string: String) {
        var string = string
        // Most strings (channel names, client ids, epochs) need no escaping: written in one step,
        // quotes included, instead of three writes and a scan that copies runs.
        let plain: Bool = string.withUTF8 { utf8 in
            guard utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x22 && $0 != 0x5C }) else { return false }
            self.writeWithUnsafeMutableBytes(minimumWritableBytes: utf8.count + 2) { room in
                room[0] = UInt8(ascii: "\"")
                if let base = utf8.baseAddress, utf8.count > 0 {
                    UnsafeMutableRawBufferPointer(rebasing: room[1...]).copyMemory(from: UnsafeRawBufferPointer(start: base, count: utf8.count))
                }
                room[utf8.count + 1] = UInt8(ascii: "\"")
                return utf8.count + 2
            }
            return true
        }
        if plain { return }
        self.writeInteger(UInt8(ascii: "\""))
        string.withUTF8 { utf8 in
            var runStart = 0
            for i in 0..<utf8.count {
                let b = utf8[i]
                guard b < 0x20 || b == 0x22 || b == 0x5C else { continue }
                if runStart < i { self.writeBytes(UnsafeBufferPointer(rebasing: utf8[runStart..<i])) }
                switch b {
                case 0x22: self.writeStaticString("\\\"")
                case 0x5C: self.writeStaticString("\\\\")
                case 0x0A: self.writeStaticString("\\n")
                case 0x0D: self.writeStaticString("\\r")
                case 0x09: self.writeStaticString("\\t")
                default:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    self.writeStaticString("\\u00")
                    self.writeInteger(hex[Int(b >> 4)])
                    self.writeInteger(hex[Int(b & 0xF)])
                }
                runStart = i + 1
            }
            if runStart < utf8.count { self.writeBytes(UnsafeBufferPointer(rebasing: utf8[runStart..<utf8.count])) }
        }
        self.writeInteger(UInt8(ascii: "\""))
    }

    /// Writes a decimal integer.
    public mutating func writeDecimal<T: BinaryInteger>(_ value: T) {
        guard let magnitude = UInt64(exactly: value.magnitude) else {
            self.writeString(String(value))
            return
        }
        if value < 0 { self.writeInteger(UInt8(ascii: "-")) }
        self.writeDecimalDigits(magnitude)
    }

    /// The digits of `value`, written straight into the buffer (no `String` in between: offsets and
    /// ids are written into every reply and publication).
    private mutating func writeDecimalDigits(_ value: UInt64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // room for UInt64.max's 20 digits
        let count = withUnsafeMutableBytes(of: &digits) { room -> Int in
            var remaining = value
            var index = room.count
            repeat {
                index -= 1
                room[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remaining % 10)
                remaining /= 10
            } while remaining > 0
            return room.count - index
        }
        _ = withUnsafeBytes(of: &digits) { room in
            self.writeBytes(UnsafeRawBufferPointer(rebasing: room[(room.count - count)...]))
        }
    }

    /// Writes `"key":` (the key is trusted to need no escaping).
    @inlinable
    public mutating func writeJSONKey(_ key: StaticString) {
        self.writeInteger(UInt8(ascii: "\""))
        self.writeStaticString(key)
        self.writeStaticString("\":")
    }
}

extension JSONValue {
    /// The compact JSON text of this value.
    public var jsonBytes: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeJSON(self)
        return buffer
    }

    /// The compact JSON text of this value as a string.
    public var jsonString: String {
        String(buffer: self.jsonBytes)
    }
}
