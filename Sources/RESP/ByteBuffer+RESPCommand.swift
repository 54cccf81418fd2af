public import NIOCore

extension ByteBuffer {
    /// Writes a command as a RESP array of bulk strings straight into the buffer:
    /// `*N\r\n$len\r\n...\r\n`.
    ///
    /// - Returns: The number of bytes written.
    @discardableResult
    public mutating func writeRESPCommand(_ arguments: [RESPArgument]) -> Int {
        var written = self.writeRESPLine(RESPType.array.rawValue, Int64(arguments.count))
        for argument in arguments {
            written += self.writeRESPBulkString(argument)
        }
        return written
    }

    /// Writes a command as a RESP array of bulk strings straight into the buffer:
    /// `*N\r\n$len\r\n...\r\n`.
    ///
    /// - Returns: The number of bytes written.
    @discardableResult
    public mutating func writeRESPCommand(_ arguments: some Collection<RESPArgument>) -> Int {
        var written = self.writeRESPLine(RESPType.array.rawValue, Int64(arguments.count))
        for argument in arguments {
            written += self.writeRESPBulkString(argument)
        }
        return written
    }

    /// Writes a command as a RESP array of bulk strings straight into the buffer:
    /// `*N\r\n$len\r\n...\r\n`.
    ///
    /// - Returns: The number of bytes written.
    @discardableResult
    public mutating func writeRESPCommand(_ arguments: RESPArgument...) -> Int {
        self.writeRESPCommand(arguments)
    }

    @discardableResult
    mutating func writeRESPBulkString(_ argument: RESPArgument) -> Int {
        let bulk = RESPType.bulkString.rawValue
        switch argument {
        case .string(var string):
            return string.withUTF8 { self.writeRESPBulk(UnsafeRawBufferPointer($0)) }
        case .bytes(let bytes):
            return bytes.withUnsafeReadableBytes { self.writeRESPBulk($0) }
        case .integer(let integer):
            // `$<digits>\r\n<integer>\r\n`: the integer is a line of its own without a type byte; both
            // lines in one step (each fits in 24 bytes).
            let digits = Self.decimalLength(of: integer)
            return self.writeWithUnsafeMutableBytes(minimumWritableBytes: 48) { room in
                let length = Self.writeLine(into: room, bulk, Int64(digits))
                return length + Self.writeLine(into: UnsafeMutableRawBufferPointer(rebasing: room[length...]), nil, integer)
            }
        case .double(let double):
            let string = "\(double)"
            let written = self.writeRESPLine(bulk, Int64(string.utf8.count)) + self.writeString(string)
            return written + self.writeStaticString("\r\n")
        }
    }

    /// Writes `$<length>\r\n<bytes>\r\n` in one step (one capacity check and one index move):
    /// a command such as the publish script's `EVALSHA` has a dozen of these.
    private mutating func writeRESPBulk(_ bytes: UnsafeRawBufferPointer) -> Int {
        self.writeRESPBulk(bytes, UnsafeRawBufferPointer(start: nil, count: 0), UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// Writes one bulk string of `first`, `second` and `third` together, in one step.
    mutating func writeRESPBulk(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer, _ third: UnsafeRawBufferPointer) -> Int {
        let count = first.count + second.count + third.count
        return self.writeWithUnsafeMutableBytes(minimumWritableBytes: 24 + count) { room in
            var length = Self.writeLine(into: room, RESPType.bulkString.rawValue, Int64(count))
            func copy(_ part: UnsafeRawBufferPointer) {
                guard part.count > 0 else { return }
                UnsafeMutableRawBufferPointer(rebasing: room[length..<(length + part.count)]).copyMemory(from: part)
                length += part.count
            }
            copy(first)
            copy(second)
            copy(third)
            room[length] = UInt8(ascii: "\r")
            room[length + 1] = UInt8(ascii: "\n")
            return length + 2
        }
    }

    /// Writes `<type byte><value in decimal>\r\n` (no type byte when nil) in one step: one capacity
    /// check and one index move for the whole line, where a byte at a time costs a check each.
    @discardableResult
    mutating func writeRESPLine(_ type: UInt8?, _ value: Int64) -> Int {
        // A type byte, a sign, Int64's 19 digits and CRLF fit in 23 bytes.
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: 24) { Self.writeLine(into: $0, type, value) }
    }

    /// `<type byte><value in decimal>\r\n` at the start of `room` (at least 24 bytes); its length.
    private static func writeLine(into room: UnsafeMutableRawBufferPointer, _ type: UInt8?, _ value: Int64) -> Int {
        var length = 0
        if let type {
            room[0] = type
            length = 1
        }
        if value < 0 {
            room[length] = UInt8(ascii: "-")
            length += 1
        }
        var magnitude = value.magnitude
        length += Self.decimalLength(of: magnitude)
        var index = length
        repeat {
            index -= 1
            room[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
            magnitude /= 10
        } while magnitude > 0
        room[length] = UInt8(ascii: "\r")
        room[length + 1] = UInt8(ascii: "\n")
        return length + 2
    }

    /// Characters of `value` in decimal, with its sign.
    private static func decimalLength(of value: some FixedWidthInteger) -> Int {
        var magnitude = UInt64(value.magnitude)
        var length = value < 0 ? 2 : 1
        while magnitude >= 10 {
            magnitude /= 10
            length += 1
        }
        return length
    }
}
