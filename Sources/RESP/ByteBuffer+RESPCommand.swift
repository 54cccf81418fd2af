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
            // `$<digits>\r\n<integer>\r\n`: the integer is a line of its own without a type byte.
            let digits = Self.decimalLength(of: integer)
            return self.writeRESPLine(bulk, Int64(digits)) + self.writeRESPLine(nil, integer)
        case .double(let double):
            let string = "\(double)"
            let written = self.writeRESPLine(bulk, Int64(string.utf8.count)) + self.writeString(string)
            return written + self.writeStaticString("\r\n")
        }
    }

    /// Writes `$<length>\r\n<bytes>\r\n` in one step (one capacity check and one index move):
    /// a command such as the publish script's `EVALSHA` has a dozen of these.
    private mutating func writeRESPBulk(_ bytes: UnsafeRawBufferPointer) -> Int {
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: 24 + bytes.count) { room in
            var length = Self.writeLine(into: room, RESPType.bulkString.rawValue, Int64(bytes.count))
            if let base = bytes.baseAddress, bytes.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: room[length..<(length + bytes.count)]).copyMemory(
                    from: UnsafeRawBufferPointer(start: base, count: bytes.count))
            }
            length += bytes.count
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
